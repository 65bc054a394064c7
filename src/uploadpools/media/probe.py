"""Decide whether a stored file is a usable video: the server's side.

FFmpeg never runs in the server process. ``probe`` hands the file's path to one
long-lived child process (``avprobe.serve``: PyAV and the checks described in
``uploadpools.media.avprobe``, nothing else imported), which probes one file at a
time and answers with the video's properties or the reason it is refused. That keeps
FFmpeg's libraries and the heap that probing grows (frames, demuxer buffers, decoder
threads) out of the server, whose memory is what a self-hoster budgets for.

The child is started on first use (``python -c``, the server's own interpreter and
environment) and leaves on its own after ``IDLE_EXIT_S`` without a request, after
``MAX_PROBES_PER_CHILD`` probes (the next probe starts a fresh one), or when the server
goes away (its stdin closes). Probes queue for it, so only one probe's memory is ever
in use. Its failures are errors, never hangs:

* a probe that takes longer than ``PROBE_TIMEOUT_S``, or a child that dies while
  probing a file: the child is killed (if need be) and the file is tried once more in a
  fresh child, since a child can die for reasons that are not the file's (the kernel's
  OOM killer on a starved machine, a stray SIGKILL). Only if it kills or hangs the fresh
  child too is the file refused (``NotAVideo``, naming how the checker ended or "checking
  the video took longer than ..."): a crafted file that crashes FFmpeg is refused, and
  never takes the server down;
* the child cannot start at all: ``ProbeUnavailable``, a server problem (503 for an
  upload; a fetched ``video_url`` is tried again later), not the file's.

This module imports nothing heavy: the child imports it for ``ProbeResult`` and
``NotAVideo``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IDLE_EXIT_S",
    "MAX_PROBES_PER_CHILD",
    "PROBE_TIMEOUT_S",
    "NotAVideo",
    "ProbeResult",
    "ProbeUnavailable",
    "ProbeWorker",
    "probe",
]

# Far above what a probe takes (its work is bounded: see avprobe), so only a
# pathological file or a stuck FFmpeg reaches it.
PROBE_TIMEOUT_S = 120.0
# Importing PyAV takes ~0.1 s; a starved machine may need much longer.
START_TIMEOUT_S = 60.0
# The child's ~35 MB are given back this long after the last probe.
IDLE_EXIT_S = 30.0
# A fresh child every so many probes: FFmpeg fragments the child's heap a little with
# each one (~4 MB over 5,000 small videos); starting one costs ~0.1 s of CPU.
MAX_PROBES_PER_CHILD = 1000

_log = logging.getLogger(__name__)
# The checks' log records are logged here, under the name they have in the child.
_child_logger = logging.getLogger("uploadpools.media.avprobe")


@dataclass(frozen=True)
class ProbeResult:
    container: str
    video_codec: str
    audio_codec: str | None
    duration_s: float
    width: int
    height: int
    content_type: str


class NotAVideo(Exception):
    """The file is not a usable video; ``str(exc)`` says why, in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProbeUnavailable(RuntimeError):
    """The probe child could not be started or broke its protocol (a server problem)."""


def child_command(
    idle_exit_s: float = IDLE_EXIT_S,
    log_level: int | None = None,
    max_probes: int = MAX_PROBES_PER_CHILD,
) -> list[str]:
    level = _child_logger.getEffectiveLevel() if log_level is None else log_level
    return [
        sys.executable,
        "-c",
        "from uploadpools.media.avprobe import serve; serve()",
        repr(float(idle_exit_s)),
        str(level),
        str(max_probes),
    ]


class ProbeWorker:
    """Client of one probe child; ``probe`` is blocking and thread-safe (one at a time).

    ``command`` starts the child (``child_command()`` by default); tests pass others
    to make a child crash or hang.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        timeout_s: float = PROBE_TIMEOUT_S,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.command = list(command) if command is not None else child_command()
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self.started = 0  # children started so far

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def probe(self, path: Path) -> ProbeResult:
        request = json.dumps({"path": str(path)}).encode() + b"\n"
        with self._lock:
            # A child can die or hang for reasons that are not the file's (the kernel's
            # OOM killer on a starved machine, a stray kill, a stall): each of those gets
            # one more try in a fresh child before the file is refused.
            retried_pipe = retried_exit = retried_failure = False
            while True:
                proc = self._running()
                assert proc.stdin is not None
                try:
                    proc.stdin.write(request)
                except BrokenPipeError:
                    status = self._reap()
                    if not retried_pipe:
                        retried_pipe = True
                        continue  # it had just left; not this file's doing
                    raise ProbeUnavailable(f"the video probe process {_ended(status)}") from None
                answer = self._read_line(proc, self.timeout_s)
                if answer is None:  # it went away without answering
                    status = self._reap()
                    if status == 0 and not retried_exit:
                        # An idle exit that crossed our request: it never read it.
                        retried_exit = True
                        continue
                    failure = f"the video checker {_ended(status)} while reading this file"
                elif answer is _TIMED_OUT:
                    self._discard()
                    failure = f"checking the video took longer than {self.timeout_s:g} s"
                else:
                    if answer.get("last"):
                        self._reap()  # it leaves after this answer; the next probe starts another
                    return self._result(answer)
                if retried_failure:
                    # The same file did it to a fresh child too: it is the file.
                    raise NotAVideo(failure)
                retried_failure = True
                _log.warning("%s (%s): trying it once more in a new checker", failure, path)

    def close(self) -> None:
        """Let the child go (it exits when its stdin closes); kill it if it lingers."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2.0)
            self._discard()

    # -- internals (called with the lock held) --

    def _running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            self._reap()
        env = dict(os.environ)
        # glibc malloc, tuned for what FFmpeg allocates: its decoder threads would each
        # get an arena (see kit.memory), and its packet and frame buffers (up to a few
        # MB each) would raise the mmap threshold and then stay in the heap once freed;
        # a fixed threshold maps and unmaps them (child: ~5 MB less after a 1 GB upload).
        env.setdefault("MALLOC_ARENA_MAX", "2")
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        try:
            proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env
            )
        except OSError as exc:
            raise ProbeUnavailable(f"cannot start the video probe process: {exc}") from exc
        self._proc, self._pending = proc, b""
        self.started += 1
        ready = self._read_line(proc, self.start_timeout_s)
        if ready is None or ready is _TIMED_OUT or ready.get("ready") is not True:
            status = self._discard()
            why = "did not start in time" if ready is _TIMED_OUT else _ended(status)
            raise ProbeUnavailable(f"the video probe process {why}")
        return proc

    def _read_line(self, proc: subprocess.Popen[bytes], timeout_s: float) -> Any:
        """The next JSON line from the child; None at EOF; _TIMED_OUT after ``timeout_s``."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _TIMED_OUT
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            self._discard()
            raise ProbeUnavailable(
                f"the video probe process answered something else than JSON: {line[:200]!r}"
            ) from None
        if not isinstance(message, dict):
            self._discard()
            raise ProbeUnavailable(f"unexpected answer from the video probe process: {message!r}")
        return message

    def _result(self, answer: dict[str, Any]) -> ProbeResult:
        for level, text in answer.get("logs", ()):
            _child_logger.log(level, "%s", text)
        if "result" in answer:
            return ProbeResult(**answer["result"])
        if "refused" in answer:
            raise NotAVideo(answer["refused"])
        raise RuntimeError(f"the video probe failed: {answer.get('error', answer)}")

    def _discard(self) -> int | None:
        """Kill the child (if still running) and reap it; its exit status."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        proc, self._proc, self._pending = self._proc, None, b""
        if proc is None:
            return None
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            return proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


_TIMED_OUT: Any = object()


def _ended(status: int | None) -> str:
    if status is None:
        return "is gone"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"crashed ({name})"
    return f"exited with status {status}"


_default: ProbeWorker | None = None
_default_lock = threading.Lock()


def default_worker() -> ProbeWorker:
    """This process's probe child (one per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ProbeWorker()
            atexit.register(_default.close)
        return _default


async def probe(path: Path) -> ProbeResult:
    """Probe ``path`` in the probe child; raise ``NotAVideo`` when it is not a usable video.

    Waits in a worker thread, so the event loop keeps serving meanwhile.
    """
    # Imported here: the probe child imports this module and needs none of it.
    import anyio.to_thread

    return await anyio.to_thread.run_sync(default_worker().probe, Path(path))
