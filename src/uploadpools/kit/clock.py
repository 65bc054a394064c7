"""One injectable clock. Nothing else calls ``datetime.now()``; tests move a ``FrozenClock``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now


class OffsetClock:
    """The host clock shifted by a number of seconds read from a file.

    For tests and demos that must move time across processes (a worker process cannot
    share a FrozenClock): write a new offset into the file and every process using it
    jumps. Refused in production by the settings.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._offset = 0.0

    def _read(self) -> float:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0.0
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            text = self.path.read_text().strip()
            self._offset = float(text) if text else 0.0
            self._stamp = stamp
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._read())


def clock_for(offset_file: Path | None) -> Clock:
    return OffsetClock(offset_file) if offset_file is not None else SystemClock()
