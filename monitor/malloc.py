"""glibc's malloc arenas and scoring threads: why every thread that scores shares the main arena.

A thread's own arena grows in 64 MiB heaps, so a larger tensor (the activations of a batch of
crops) is mmap'd and unmapped on every allocation there. The page faults made CPU scoring on any
thread but the main one 1.7× slower (vqmon watch's stream threads, the threads of Ray's actors;
bench/README.md). Kept free of torch and Ray so drivers can import it cheaply.
"""
from __future__ import annotations

import ctypes

# For processes that others start (Ray workers): glibc reads it before any thread exists.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1"}
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def share_malloc_arena() -> None:
    """Give every thread created from now on the main malloc arena (call before starting threads); a no-op
    where the C library has no mallopt."""
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass
