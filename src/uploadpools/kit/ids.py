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
_HIGH, _LOW = range(120, 79, -10), range(70, -1, -10)  # the millisecond digits, the rest
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """`n` ids in increasing order, made together (one clock read, one urandom call)."""
    global _last
    with _lock:
        ms = (time.time_ns() // 1_000_000) << 80
        noise = os.urandom(10 * n)
        values = []
        last = _last
        for i in range(0, 10 * n, 10):
            value = ms | int.from_bytes(noise[i : i + 10], "big")
            if value <= last:
                value = last + 1
            values.append(value)
            last = value
        _last = last
    # The first ten digits are the millisecond's (and two zero bits): spelled once per
    # millisecond, not once per id (a batch shares one).
    pairs = _PAIRS
    prefixes: dict[int, str] = {}
    out = []
    for v in values:
        high = v >> 80
        prefix = prefixes.get(high)
        if prefix is None:
            prefix = prefixes[high] = "".join([pairs[v >> s & 1023] for s in _HIGH])
        out.append(prefix + "".join([pairs[v >> s & 1023] for s in _LOW]))
    return out
