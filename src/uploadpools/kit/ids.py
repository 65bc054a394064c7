"""Opaque, time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits).

They sort by creation time, which lets lists page by id alone. Within one process they
are strictly increasing (a second id in the same millisecond increments the random part),
so "newest first" holds even for rows made together. The millisecond part comes from the
host clock on purpose: ids need uniqueness and order, never the injected clock's "now".
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two digits
_SHIFTS = range(120, -1, -10)
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    global _last
    with _lock:
        value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
        if value <= _last:
            value = _last + 1
        _last = value
    return "".join([_PAIRS[value >> s & 1023] for s in _SHIFTS])
