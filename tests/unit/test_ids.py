"""Ids: 26 Crockford base32 digits of a 128-bit value (48-bit ms + 80 random bits),
strictly increasing within a process."""

from __future__ import annotations

import time

from uploadpools.kit import ids


def _reference(value: int) -> str:
    digits = []
    for _ in range(26):
        digits.append(ids._ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def test_digits_are_the_value_in_crockford_base32(monkeypatch):  # type: ignore[no-untyped-def]
    for value in (0, 1, 31, 32, 1023, 1024, 2**80 - 1, 2**127 + 12345, 2**128 - 1):
        monkeypatch.setattr(ids, "_last", value - 1)
        monkeypatch.setattr(ids.time, "time_ns", lambda: 0)
        monkeypatch.setattr(ids.os, "urandom", lambda n: bytes(n))
        assert ids.new_id() == _reference(value)


def test_increasing_and_time_prefixed():  # type: ignore[no-untyped-def]
    before = time.time_ns() // 1_000_000
    made = [ids.new_id() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(i) == 26 and set(i) <= set(ids._ALPHABET) for i in made)
    value = 0
    for c in made[0][:10]:
        value = value * 32 + ids._ALPHABET.index(c)
    assert before <= value <= time.time_ns() // 1_000_000


def test_a_batch_is_increasing_and_continues_the_sequence(monkeypatch):  # type: ignore[no-untyped-def]
    # A frozen millisecond and no randomness: every id after the first is the last + 1.
    monkeypatch.setattr(ids, "_last", 0)
    monkeypatch.setattr(ids.time, "time_ns", lambda: 5_000_000)
    monkeypatch.setattr(ids.os, "urandom", lambda n: bytes(n))
    batch = ids.new_ids(5)
    after = ids.new_id()
    values = [(5 << 80) + i for i in range(6)]
    assert [*batch, after] == [_reference(v) for v in values]
    assert ids.new_ids(0) == []
