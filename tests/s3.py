"""A real S3-compatible server for the tests and bench/batch_throughput.py: moto in server mode on a loopback port.

The credentials are made up and reach vqmon the way a deployment gives them, through the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), so tests can look for
them in every output. Set before `ray.init`, they reach Ray's workers too.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

ACCESS_KEY = "AKIAVQMONTESTKEY0001"
SECRET_KEY = "vqmonTestSecret/q8Zr2Lp5Wn7Xv1Ck3Mb9"


@contextmanager
def s3_server(*buckets: str):
    """Start the server with `buckets`, put its address and credentials in os.environ; yields a boto3 client."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request line per GET
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def objects(client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`: key → content."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
