"""Opaque, time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits).

They sort by creation time, which lets lists page by id alone. The millisecond part
comes from the host clock on purpose: ids need uniqueness and rough order, never the
injected clock's notion of "now".
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))
