"""Live monitoring on Ray: one `StreamMonitor` actor per stream, kept alive by a `Supervisor` actor.

A monitor runs exactly the in-process `vqmon watch` pipeline (monitor/watch.py `Watcher`) for one
stream: decode → score → windows → alerts → sinks all happen inside the actor, so frames never
cross the object store. Its placement comes from the config's `ray:` section (`num_gpus` may be a
fraction, so several streams share a GPU; 0 places it on CPU).

The Supervisor is a named actor ("supervisor" in namespace "vqmon") holding the desired streams:
`apply(config)` starts, stops or restarts monitors to match a (re)loaded config; a health loop
restarts monitors whose actor died, with exponential backoff, and records a `restart` stream event
through the config's record sinks; `status()` answers `vqmon status`.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import traceback

import ray

from monitor.config import OTelOptions, WatchConfig
from monitor.malloc import MALLOC_ENV
from monitor.records import StreamEvent
from monitor.sinks import Sinks

NAMESPACE = "vqmon"
SUPERVISOR = "supervisor"
EVENT_SINKS = ("parquet", "kafka", "jsonl")  # sink types the supervisor's own events (restarts) go to
CHECK_EVERY_S = 0.5


def _one_stream(cfg: WatchConfig, stream) -> WatchConfig:
    """The config a single monitor runs. A Prometheus endpoint is per host, so on Ray OTel exports by OTLP/console only."""
    sinks = tuple(dataclasses.replace(s, options=dataclasses.replace(s.options, prometheus=None))
                  if isinstance(s.options, OTelOptions) else s for s in cfg.sinks)
    return dataclasses.replace(cfg, streams=(stream,), sinks=sinks)


@ray.remote
class StreamMonitor:
    """One stream's Watcher inside an actor; models load once here, on the actor's GPU if it was given one."""

    def __init__(self, cfg: WatchConfig):
        from monitor.watch import Watcher

        if cfg.device == "auto":
            cfg = dataclasses.replace(cfg, device="cuda" if ray.get_gpu_ids() else "cpu")
        self.stream_id = cfg.streams[0].id
        self.watcher = Watcher(cfg)
        self.watcher.start()

    def status(self) -> dict:
        st = self.watcher.status[self.stream_id]
        scores = {m: round(v, 1) for m, v in st.last_window.items()}
        worst = min(scores.items(), key=lambda kv: kv[1]) if scores else None
        return {"state": st.state, "frames": st.frames, "fps": round(st.fps(), 2), "lag_s": st.lag_s(),
                "worst_window": worst, "firing": sorted(st.firing), "ended": not self.watcher.running()}

    def close(self) -> None:
        """Stop the source, flush windows, alerts and sinks (nothing scored is lost)."""
        self.watcher.stop()
        self.watcher.join(timeout=30)
        self.watcher.close()


@dataclasses.dataclass
class _Stream:
    cfg: WatchConfig  # the one-stream config its monitor runs
    handle: object = None
    state: str = "starting"
    last: dict = dataclasses.field(default_factory=dict)  # the monitor's latest status()
    restarts: int = 0
    crashes_in_row: int = 0
    restart_at: float | None = None  # monotonic time a crashed monitor is due to start again


@ray.remote(num_cpus=0, max_concurrency=4)
class Supervisor:
    """Holds the desired streams and keeps a healthy monitor for each (threaded actor: a health loop runs beside calls)."""

    def __init__(self, cfg: WatchConfig):
        self.lock = threading.Lock()
        self.streams: dict[str, _Stream] = {}
        self.cfg = cfg
        self.sinks = Sinks()
        self._stopping = threading.Event()
        self.apply(cfg)
        self._loop = threading.Thread(target=self._health_loop, daemon=True, name="supervisor-health")
        self._loop.start()

    # -- desired state -------------------------------------------------------------------------
    def apply(self, cfg: WatchConfig) -> dict:
        """Match the running monitors to `cfg`: new streams start, removed ones stop, changed ones restart."""
        with self.lock:
            old_event_sinks = [s for s in self.cfg.sinks if s.type in EVENT_SINKS]
            new_event_sinks = [s for s in cfg.sinks if s.type in EVENT_SINKS]
            if not self.sinks.sinks or old_event_sinks != new_event_sinks:
                self.sinks.close()
                self.sinks = Sinks.open(new_event_sinks)
            self.cfg = cfg
            wanted = {s.id: _one_stream(cfg, s) for s in cfg.streams}
            changes = {"started": [], "stopped": [], "restarted": []}
            for sid in list(self.streams):
                if sid not in wanted:
                    self._stop(self.streams.pop(sid))
                    changes["stopped"].append(sid)
                elif self.streams[sid].cfg != wanted[sid]:
                    self._stop(self.streams[sid])
                    self.streams[sid] = self._start(_Stream(wanted[sid]))
                    changes["restarted"].append(sid)
            for sid, one in wanted.items():
                if sid not in self.streams:
                    self.streams[sid] = self._start(_Stream(one))
                    changes["started"].append(sid)
            return changes

    def _start(self, s: _Stream) -> _Stream:
        s.handle = StreamMonitor.options(num_gpus=s.cfg.ray.num_gpus, num_cpus=s.cfg.ray.num_cpus,
                                         runtime_env={"env_vars": MALLOC_ENV}).remote(s.cfg)
        s.state, s.restart_at, s.last = "starting", None, {}
        return s

    def _stop(self, s: _Stream) -> None:
        if s.handle is None:
            return
        try:
            ray.get(s.handle.close.remote(), timeout=60)
        except ray.exceptions.RayError:
            pass  # already dead: nothing left to flush
        ray.kill(s.handle)
        s.handle = None

    # -- health --------------------------------------------------------------------------------
    def _health_loop(self) -> None:
        while not self._stopping.wait(CHECK_EVERY_S):
            with self.lock:  # ask every monitor; wait for the answers without holding the lock
                asked = {sid: (s, s.handle, s.handle.status.remote())
                         for sid, s in self.streams.items() if s.handle is not None}
            ray.wait([ref for *_, ref in asked.values()], num_returns=len(asked), timeout=5.0)
            with self.lock:
                try:
                    self._check(asked)
                except Exception:  # keep supervising; the traceback goes to the actor's log
                    traceback.print_exc()

    def _check(self, asked: dict) -> None:
        now = time.monotonic()
        for sid, (s, handle, ref) in asked.items():
            if self.streams.get(sid) is not s or s.handle is not handle:
                continue  # replaced or stopped by a reload meanwhile
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:  # still starting (worker spawn, model load), or stuck: not restarted on a guess
                s.state = "unresponsive" if s.last else "starting"
                continue
            try:
                s.last = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                self._crashed(sid, s, e, now)
                continue
            if s.last["ended"]:  # the source ended (a file, or reconnects given up): flush and free the slot
                self._stop(s)
                s.state = "ended"
            else:
                s.state = s.last["state"]
                if s.state == "up":
                    s.crashes_in_row = 0
        for s in self.streams.values():
            if s.restart_at is not None and now >= s.restart_at:
                self._start(s)

    def _crashed(self, sid: str, s: _Stream, error: Exception, now: float) -> None:
        s.crashes_in_row += 1
        s.restarts += 1
        delay = min(self.cfg.ray.backoff * 2 ** (s.crashes_in_row - 1), self.cfg.ray.max_backoff)
        s.handle, s.state, s.restart_at = None, "restarting", now + delay
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        self._emit(StreamEvent(sid, "restart", detail={"attempt": s.restarts, "backoff_s": delay, "error": reason}))

    def _emit(self, event: StreamEvent) -> None:
        self.sinks.write([event])
        self.sinks.flush()  # a restart is rare and worth having on disk at once

    # -- answers -------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        """Per stream: state, fps, lag, worst last-window score, alerts firing, restarts (for `vqmon status`)."""
        with self.lock:
            return [{"stream": sid, "state": s.state, "frames": s.last.get("frames", 0), "fps": s.last.get("fps"),
                     "lag_s": s.last.get("lag_s"), "worst_window": s.last.get("worst_window"),
                     "firing": s.last.get("firing", []), "restarts": s.restarts}
                    for sid, s in self.streams.items()]

    def monitor(self, stream_id: str) -> list:
        """[the stream's StreamMonitor handle] (in a list, so Ray passes the handle itself), or [] while none runs."""
        with self.lock:
            s = self.streams.get(stream_id)
            return [s.handle] if s and s.handle is not None else []

    def shutdown(self) -> None:
        """Stop the health loop, close every monitor (flushing its sinks), close the event sinks."""
        self._stopping.set()
        self._loop.join(timeout=10)
        with self.lock:
            for s in self.streams.values():
                self._stop(s)
                s.state = "stopped"
            self.sinks.close()
            self.sinks = Sinks()


def start(cfg: WatchConfig, detached: bool = False):
    """Start the Supervisor for `cfg`, or hand the new config to the one already running (a reload)."""
    try:
        sup = ray.get_actor(SUPERVISOR, namespace=NAMESPACE)
    except ValueError:
        return Supervisor.options(name=SUPERVISOR, namespace=NAMESPACE,
                                  lifetime="detached" if detached else None).remote(cfg), None
    return sup, ray.get(sup.apply.remote(cfg))


def supervisor():
    """The running Supervisor's handle; a clear error when there is none."""
    from monitor.errors import InputError

    try:
        return ray.get_actor(SUPERVISOR, namespace=NAMESPACE)
    except ValueError:
        raise InputError("no vqmon supervisor on this Ray cluster (start one with `vqmon live --config FILE`)") from None
