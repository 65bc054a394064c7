"""Process memory settings."""

from __future__ import annotations

import ctypes
import os
import sys

_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (default: 8 per core), unless MALLOC_ARENA_MAX is set.

    Every thread that allocates under contention gets an arena of its own, and memory
    freed in one is not given back to another: the database, probe and upload threads of
    the server grew its peak RSS by ~15-18 MB that way. Call it before threads start.
    Returns whether the cap was applied (glibc on Linux only).
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
