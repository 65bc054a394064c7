"""Group commit of `video_url` enqueues: the enqueues waiting for the store go together.

A request checks what it can alone (auth, body, URL), then hands its video to this
process's `EnqueueGroup` and waits. One writer task takes every video waiting at that
moment and writes them in one transaction: the Idempotency-Keys of keyed requests
checked once, the pools locked once, multi-row inserts for media and items (and the
webhook outbox) and for the keys' records (written done, with the answer, so a replay
finds exactly what was committed), one COMMIT. Only then is each request answered, from
its own rows: a 201 always means a committed item.

There is no timed window: while one group is being written the next one gathers, so an
idle server writes a lone enqueue at once and a busy one writes many per transaction.

Each video is still judged on its own (its pool, its pre-flight: `QueueService
.enqueue_urls`); a refused one gets its own error and writes nothing. If the group's
transaction fails on a value (a constraint, a conversion, an Idempotency-Key recorded
meanwhile by another transaction), it is rolled back and its videos are written again
one by one, so the failure reaches only the request that causes it; if the store itself
fails (locked, unreachable), every request of the group gets that error at once, as
each would have alone. Videos are written in the order they arrived, which is their
order in each pool.

A pool that another transaction holds (a ticker preparing an instant's firings, which
keeps its pools locked until the instant: engine/ticker.py) does not hold up the group:
the writer locks the pools it can without waiting, writes those, and hands the videos
of the held pools to a second writer, which waits for their locks. Until that one has
written them, every later video for those pools goes to it as well, behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.config import Settings
from uploadpools.engine.wakeup import notify_change
from uploadpools.exceptions import UploadPoolsError, ValidationFailed
from uploadpools.idempotency import KeyUse, claim_in, record_done
from uploadpools.kit.clock import Clock
from uploadpools.queue.service import NewVideo, QueueService

log = logging.getLogger(__name__)

MAX_GROUP = 500


class GroupClosed(UploadPoolsError):
    status_code = 503
    title = "Shutting down"
    type_slug = "unavailable"


@dataclass(eq=False, slots=True)
class _Waiting:
    video: NewVideo | ValidationFailed  # or why the request was refused before its key
    claim: KeyUse | None
    future: asyncio.Future[bytes] = field(repr=False)


class EnqueueGroup:
    """This process's writer of `video_url` enqueues (one task, started on first use)."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        *,
        on_commit: Callable[[], None] = lambda: None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit
        self.max_group = max_group
        self._waiting: list[_Waiting] = []
        self._writing: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The second writer's: videos of held pools, those pools, and its task.
        self._held: list[_Waiting] = []
        self._held_writing: list[_Waiting] = []
        self._held_pools: set[str] = set()
        self._held_task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_crowd = -1e9

    def recently_busy(self, within_s: float = 0.25) -> bool:
        """Enqueues arrive faster than they are written one by one: several are waiting,
        or a group of several was taken within `within_s` seconds. (A steady trickle,
        however long, is not busy: it leaves the CPU idle.)"""
        return len(self._waiting) > 1 or time.monotonic() - self._last_crowd < within_s

    async def enqueue(self, video: NewVideo, claim: KeyUse | None = None) -> bytes:
        """Queue `video`; the JSON of its 201 answer once committed, or its own error.

        `claim`: the request's Idempotency-Key, claimed and recorded (with the answer) in
        the group's transaction; a key in use answers as `IdempotencyGuard.begin` does."""
        return await self._submit(video, claim)

    async def refuse(self, error: ValidationFailed, claim: KeyUse) -> NoReturn:
        """A keyed request its body already refuses: the key is judged first, as a claim
        taken before reading the body would be (a replay, or 422 for another request);
        if it is free, `error` is the answer and nothing is recorded."""
        await self._submit(error, claim)
        raise AssertionError("a refused request has no 201 answer")

    async def _submit(self, video: NewVideo | ValidationFailed, claim: KeyUse | None) -> bytes:
        if self._closed:
            raise GroupClosed("the server is shutting down; retry")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="enqueue-group")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(video, claim, future))
        self._wake.set()
        return await future

    async def aclose(self) -> None:
        """Stop the writer; a video not written yet is answered 503 (none should be left:
        the server stops taking requests and lets running ones finish first)."""
        self._closed = True
        for task in (self._task, self._held_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._held_task = None
        for w in [*self._writing, *self._waiting, *self._held_writing, *self._held]:
            _fail(w, GroupClosed("the server is shutting down; retry"))
        self._writing, self._waiting, self._held_writing, self._held = [], [], [], []

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                try:
                    await self._write_waiting()
                except Exception as exc:  # the store is unreachable: fail this group only
                    for w in self._writing:
                        _fail(w, exc)
                self._writing = []  # (kept when cancelled: `aclose` answers them)

    async def _write_waiting(self) -> None:
        async with self.maker() as session:
            # Wait for the store first (on SQLite: the process's one connection), then
            # take everything that arrived meanwhile.
            try:
                await session.connection()
            finally:
                self._writing = group = self._take()
            # Behind the videos the second writer has for their pools, in order.
            behind = [w for w in group if _pool_of(w) in self._held_pools]
            if behind:
                self._hold(behind)
                group = [w for w in group if _pool_of(w) not in self._held_pools]
            if not group or await self._write_together(session, group, wait=False):
                return
        await self._write_one_by_one(group, wait=False)

    async def _run_held(self) -> None:
        """The second writer: the videos of pools another transaction held, written
        waiting for those pools' locks."""
        while self._held:
            group, self._held = self._held, []
            self._held_writing = group
            try:
                async with self.maker() as session:
                    done = await self._write_together(session, group, wait=True)
                if not done:
                    await self._write_one_by_one(group, wait=True)
            except Exception as exc:  # the store is unreachable: fail these only
                for w in group:
                    _fail(w, exc)
            self._held_writing = []
            self._held_pools = {_pool_of(w) for w in self._held}
        self._held_task = None

    def _hold(self, group: list[_Waiting]) -> None:
        """Hand these videos (in arrival order) to the second writer: from now on, it
        answers them."""
        handed = {id(w) for w in group}
        self._writing = [w for w in self._writing if id(w) not in handed]
        self._held += group
        self._held_pools |= {_pool_of(w) for w in group}
        if self._held_task is None:
            self._held_task = asyncio.create_task(self._run_held(), name="enqueue-held")

    async def _write_together(
        self, session: AsyncSession, group: list[_Waiting], *, wait: bool
    ) -> bool:
        """Write the group in one transaction; False when it must be written one by one
        (a value of one video failed it)."""
        try:
            answers = await self._write(session, group, wait=wait)
        except Exception as exc:
            await session.rollback()
            if len(group) == 1 or not _caused_by_a_row(exc):
                # The store itself failed (locked, unreachable): every request would
                # meet the same; trying them one by one would only repeat the wait.
                for w in group:
                    _fail(w, exc)
                return True
            log.warning(
                "writing %d enqueues together failed (%s); writing them one by one",
                len(group),
                exc,
            )
            return False
        self._settle(group, answers)
        return True

    async def _write_one_by_one(self, group: list[_Waiting], *, wait: bool) -> None:
        for w in group:
            async with self.maker() as session:
                try:
                    answers = await self._write(session, [w], wait=wait)
                except Exception as exc:
                    await session.rollback()
                    _fail(w, exc)
                else:
                    self._settle([w], answers)

    def _settle(
        self, group: list[_Waiting], answers: list[bytes | UploadPoolsError | None]
    ) -> None:
        """Answer the videos written or refused; hand those of held pools (None) over."""
        held = [w for w, a in zip(group, answers, strict=True) if a is None]
        if held:
            self._hold(held)
        self._answer(
            [w for w, a in zip(group, answers, strict=True) if a is not None],
            [a for a in answers if a is not None],
        )

    def _take(self) -> list[_Waiting]:
        group = [w for w in self._waiting[: self.max_group] if not w.future.done()]
        del self._waiting[: self.max_group]
        if len(group) > 1:
            self._last_crowd = time.monotonic()
        return group

    async def _write(
        self, session: AsyncSession, group: list[_Waiting], *, wait: bool
    ) -> list[bytes | UploadPoolsError | None]:
        """Each video's answer; None for a video whose pool another transaction holds
        (only when not `wait`ing for the pools: nothing of it, not even its
        Idempotency-Key, is written)."""
        answers: list[bytes | UploadPoolsError | None] = [None] * len(group)
        service = QueueService(session, self.settings)
        # The pools first, locked without waiting unless told to wait.
        locked = None
        held: set[str] = set()
        if not wait:
            locked, held = await service.lock_free_pools(
                sorted({w.video.pool_id for w in group if isinstance(w.video, NewVideo)})
            )
        mine = [n for n, w in enumerate(group) if _pool_of(w) not in held]
        # Idempotency-Keys first: a key in use answers for its request, whatever it asks.
        keyed = [n for n in mine if group[n].claim is not None]
        verdicts = await claim_in(session, [group[n].claim for n in keyed])  # type: ignore[misc]
        for n, verdict in zip(keyed, verdicts, strict=True):
            answers[n] = verdict
        todo: list[tuple[int, NewVideo]] = []
        for n in mine:
            w = group[n]
            if answers[n] is None:
                if isinstance(w.video, ValidationFailed):
                    answers[n] = w.video
                else:
                    todo.append((n, w.video))
        outcomes = (
            await service.enqueue_urls([v for _, v in todo], self.clock.now(), locked=locked)
            if todo
            else []
        )
        done: list[tuple[KeyUse, int, bytes]] = []
        for (n, _), outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, UploadPoolsError):
                answers[n] = outcome
                continue
            answers[n] = body = outcome.model_dump_json().encode()
            claim = group[n].claim
            if claim is not None:
                done.append((claim, 201, body))
        await record_done(session, done)
        if any(isinstance(a, bytes) for a in answers):
            await notify_change(session)
        await session.commit()
        return answers

    def _answer(self, group: list[_Waiting], answers: list[bytes | UploadPoolsError]) -> None:
        wrote = False
        for w, answer in zip(group, answers, strict=True):
            if isinstance(answer, UploadPoolsError):
                _fail(w, answer)
                continue
            wrote = True
            if not w.future.done():
                w.future.set_result(answer)
        if wrote:
            self.on_commit()


def _caused_by_a_row(exc: Exception) -> bool:
    """Could this failure come from one video's values rather than from the store?"""
    if isinstance(exc, IntegrityError | DataError | UploadPoolsError):
        return True
    # A value its column's type could not convert (not an error of the database).
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _pool_of(w: _Waiting) -> str | None:
    return w.video.pool_id if isinstance(w.video, NewVideo) else None


def _fail(w: _Waiting, exc: BaseException) -> None:
    if not w.future.done():
        w.future.set_exception(exc)
