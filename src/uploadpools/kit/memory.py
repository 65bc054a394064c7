"""Process memory settings."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Any

_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


@functools.cache
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - musl has no malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (default: 8 per core), unless MALLOC_ARENA_MAX is set.

    Every thread that allocates under contention gets an arena of its own, and memory
    freed in one is not given back to another: the database, probe and upload threads of
    the server grew its peak RSS by ~15-18 MB that way. Call it before threads start.
    Returns whether the cap was applied (glibc on Linux only).
    """
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def give_back_freed_heap() -> bool:
    """Return the free pages of malloc's heaps to the system (glibc's ``malloc_trim``).

    glibc keeps memory freed in the middle of a heap: after a large transfer the buffers it
    went through stay resident until reused. Takes a few milliseconds on a ~100 MB heap
    (call it from a worker thread). Returns whether anything was given back."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
