"""Polling helper for tests that watch threads, actors or servers make progress."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", poll: float = 0.05):
    """The first truthy value of `predicate()` within `timeout` seconds, else an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
