"""Shared plumbing for the benchmarks in this directory.

Nothing here is specific to one benchmark: running a real ``uploadpools serve``
process against a throw-away data dir (and, optionally, a throw-away
PostgreSQL database), sampling its memory, serving files to it over HTTP, and
generating test videos with PyAV.

Units: "MB" means MiB (2**20 bytes) throughout.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
MB = 1 << 20
# Generated inputs that are worth keeping between runs (the big upload file).
# Deliberately outside the repository so nothing large can end up in git.
CACHE_DIR = Path(os.environ.get("UPLOADPOOLS_BENCH_CACHE", "/tmp/uploadpools-bench-cache"))


# -- small helpers -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantiles_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of a list of durations in seconds, in milliseconds."""
    if not latencies_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    if len(latencies_s) == 1:
        v = latencies_s[0] * 1000
        return {"p50": v, "p90": v, "p99": v, "max": v, "mean": v}
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return {
        "p50": cuts[49] * 1000,
        "p90": cuts[89] * 1000,
        "p99": cuts[98] * 1000,
        "max": max(latencies_s) * 1000,
        "mean": statistics.fmean(latencies_s) * 1000,
    }


def install_sigterm_as_exit() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (cleanup) still run."""

    def _handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _handler)


# -- the server under test -----------------------------------------------------------------


def uploadpools_executable() -> str:
    """The ``uploadpools`` console script of the venv running this benchmark."""
    beside = Path(sys.executable).parent / "uploadpools"
    if beside.exists():
        return str(beside)
    venv = REPO / ".venv" / "bin" / "uploadpools"
    if venv.exists():
        return str(venv)
    found = shutil.which("uploadpools")
    if found is None:
        raise RuntimeError("cannot find the `uploadpools` command; run `make run` once to install")
    return found


class ServerProcess:
    """``uploadpools serve`` as a child process with its own environment and data dir.

    The child gets a fresh environment: every inherited ``UPLOADPOOLS_*`` variable
    is dropped, and its working directory is the run's temp dir, so a ``.env``
    file in the repository cannot leak settings into the run.
    """

    def __init__(
        self, workdir: Path, settings: dict[str, str], *, port: int, extra_args: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADPOOLS_")}
        env.update(settings)
        env["PYTHONUNBUFFERED"] = "1"
        self._env = env
        self._args = [uploadpools_executable(), "serve", "--port", str(port), *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self._args,
            cwd=self.workdir,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the benchmark does not hit the server
            # half-way; the benchmark stops it explicitly (SIGTERM) instead.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Poll until the server answers HTTP (it migrates and bootstraps first)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with status {self.proc.returncode} while starting:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(self.base_url + "/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server did not answer within {timeout_s:g} s:\n" + self.log_tail()
                    )
                time.sleep(0.1)

    def credentials(self, data_dir: Path) -> dict[str, str]:
        creds: dict[str, str] = json.loads((data_dir / "initial-credentials.json").read_text())
        return creds

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not go. Returns the exit status."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            return None if proc is None else proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """Log lines at WARNING level or above (and tracebacks)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [line for line in text.splitlines() if any(m in line for m in marks)]


# -- memory sampling -----------------------------------------------------------------------


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PFN_MASK = (1 << 55) - 1
_PRESENT = re.compile(rb"[\x80-\xff]")


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval_s`` and keeps the peak per phase.

    The phase is whatever label ``phase`` was last set to; ``peak`` is over all phases.
    ``own_peaks`` and ``children_peaks`` split the tree: the root process alone, and the
    sum of its descendants (each at its own peak within the phase, sampled together).
    ``private_peaks``: the tree's private memory (USS: pages that no other process maps,
    from smaps_rollup; shared library code is not in it), every 4th sample (~2 ms each).

    ``peaks`` is the tree's resident memory with each physical page counted once: the
    sum of the processes' RSS less the file pages (libpython, libc, the C libraries both
    load) that are resident in more than one of them, found by page frame number in
    ``/proc/PID/pagemap``. For a single process it is its RSS. The processes share no
    anonymous memory (the children are exec'd, not forked), so only file mappings of a
    path that two of them map are read (~7,000 pages, a few ms). ``sum_peaks`` is the
    plain sum of RSS. Where page frame numbers cannot be read (they read as 0 without
    CAP_SYS_ADMIN), ``frames_readable`` is False and ``peaks`` is the plain sum.
    """

    def __init__(self, pid: int, interval_s: float = 0.05, trace: Path | None = None) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        # With `trace`: every sample as a CSV line (seconds, phase, MB: tree with pages
        # once, root process, children, pages counted twice in the plain sum).
        self.trace = trace.open("w") if trace is not None else None
        self.t0 = time.monotonic()
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.phase = "startup"
        self.peaks: dict[str, int] = {}
        self.sum_peaks: dict[str, int] = {}
        self.frames_readable = True
        self._shared = 0
        self.own_peaks: dict[str, int] = {}
        self.children_peaks: dict[str, int] = {}
        self.private_peaks: dict[str, int] = {}
        self.last: int = 0
        self.samples = 0
        self._halt = threading.Event()
        self._children: list[psutil.Process] = []

    def _refresh_children(self) -> None:
        """The root's descendants, from /proc/<pid>/task/<tid>/children (cheap enough for
        every sample, so a child that lives a fraction of a second is seen); psutil's scan
        of all of /proc (~1.5 ms) every 20 samples where that file does not exist."""
        pids: list[int] = []
        todo = [self.root.pid]
        try:
            while todo:
                pid = todo.pop()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        found = [int(c) for c in (task / "children").read_text().split()]
                        pids.extend(found)
                        todo.extend(found)
        except OSError:
            if self.samples % 20 == 0:
                with contextlib.suppress(psutil.Error):
                    self._children = self.root.children(recursive=True)
            return
        known = {p.pid: p for p in self._children}
        children = []
        for pid in pids:
            if pid in known:
                children.append(known[pid])
            else:
                with contextlib.suppress(psutil.Error):
                    children.append(psutil.Process(pid))
        self._children = children

    def _tree_rss(self) -> tuple[int, int]:
        """RSS of the root process, and of all its descendants together."""
        self._refresh_children()
        own = self.root.memory_info().rss
        children = 0
        for p in self._children:
            with contextlib.suppress(psutil.Error):
                children += p.memory_info().rss
        return own, children

    def _shared_file_pages(self) -> int:
        """Bytes counted more than once in the tree's RSS sum: file pages resident in
        several of its processes (one physical page each, by page frame number)."""
        if not self.frames_readable:
            return 0
        mappings: dict[int, dict[str, list[tuple[int, int]]]] = {}
        for p in (self.root, *self._children):
            by_path: dict[str, list[tuple[int, int]]] = defaultdict(list)
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p.pid}/maps").read_text().splitlines():
                    parts = line.split(None, 5)
                    if len(parts) < 6 or not parts[5].startswith("/") or parts[1][0] == "-":
                        continue
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    by_path[parts[5]].append((lo, hi))
            mappings[p.pid] = by_path
        seen: Counter[str] = Counter(path for by_path in mappings.values() for path in by_path)
        frames: Counter[int] = Counter()
        for pid, by_path in mappings.items():
            common = [r for path, ranges in by_path.items() if seen[path] > 1 for r in ranges]
            if not common:
                continue
            try:
                with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
                    for lo, hi in common:
                        pagemap.seek(lo // _PAGE * 8)
                        data = pagemap.read((hi - lo) // _PAGE * 8)
                        entries = None
                        # Bit 63 of each little-endian entry: the page is resident.
                        for m in _PRESENT.finditer(data[7::8]):
                            if entries is None:
                                entries = array("Q", data)
                            pfn = entries[m.start()] & _PFN_MASK
                            if pfn == 0:  # not allowed to see frame numbers
                                self.frames_readable = False
                                return 0
                            frames[pfn] += 1
            except OSError:
                continue  # the process has just ended
        return sum(n - 1 for n in frames.values() if n > 1) * _PAGE

    def _tree_private(self) -> int:
        total = 0
        for p in (self.root, *self._children):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                if not self.root.is_running():
                    return
                own, children = self._tree_rss()
            except psutil.Error:
                return
            rss = own + children
            if not self._children:
                self._shared = 0
            elif self.samples % 4 == 0:
                # Every 4th sample (tens of ms under load); in between the last figure,
                # which only grows as more library code is touched: an overestimate.
                self._shared = self._shared_file_pages()
            shared = self._shared
            self.samples += 1
            self.last = rss - shared
            phase = self.phase
            values = [
                (self.peaks, rss - shared),
                (self.sum_peaks, rss),
                (self.own_peaks, own),
                (self.children_peaks, children),
            ]
            if self.samples % 4 == 1:
                values.append((self.private_peaks, self._tree_private()))
            for peaks, value in values:
                if value > peaks.get(phase, 0):
                    peaks[phase] = value
            if self.trace is not None:
                mb = [round(v / MB, 1) for v in (rss - shared, own, children, shared)]
                self.trace.write(
                    f"{time.monotonic() - self.t0:.2f},{phase},{','.join(map(str, mb))}\n"
                )
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)
        if self.trace is not None:
            self.trace.close()

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of a process and its (waited-for) children."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- serving files to the server -----------------------------------------------------------


class FileServer:
    """A tiny HTTP/1.1 server in a background thread, serving fixed bytes by path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests = 0
        counter_lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real file host

            def do_GET(self) -> None:
                body = outer.files.get(self.path.split("?", 1)[0])
                with counter_lock:
                    outer.requests += 1
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="file-server", daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


# -- test videos ---------------------------------------------------------------------------


def make_small_mp4(path: Path) -> Path:
    """A short, real H.264 MP4 (the test suite's generator when the tests are present)."""
    tests_dir = REPO / "tests"
    if (tests_dir / "media_samples.py").exists():
        if str(tests_dir) not in sys.path:
            sys.path.insert(0, str(tests_dir))
        import media_samples

        return Path(media_samples.make_mp4(path, seconds=1.0))
    return _encode_noise_mp4(path, target_bytes=0, width=320, height=240, fps=10, min_frames=10)


def cached_large_mp4(megabytes: int) -> Path:
    """A valid H.264 MP4 of about ``megabytes`` MB, generated once and cached.

    Random-noise frames encoded losslessly (``qp=0``, x264 ``ultrafast``) do not
    compress at all, so each 1280x720 frame costs ~2 MB and 1 GB is only ~500
    frames (about 20 s of 25 fps video, ~10-20 s to generate). The result is an
    ordinary MP4 that FFmpeg decodes and the server's probe fully checks
    (box layout, first frame, the last seconds).
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"noise-720p-{megabytes}MB-v1.mp4"
    if path.exists():
        return path
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        _encode_noise_mp4(tmp, target_bytes=megabytes * MB, width=1280, height=720, fps=25)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode_noise_mp4(
    path: Path, *, target_bytes: int, width: int, height: int, fps: int, min_frames: int = 1
) -> Path:
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    options = {"preset": "ultrafast", "qp": "0"} if codec == "libx264" else {"qscale": "1"}
    # A handful of distinct noise frames, cycled: no two neighbours are alike, so
    # nothing compresses, and generating them is cheap.
    pool = []
    for _ in range(7):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(os.urandom(plane.buffer_size))
        pool.append(frame)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = options
        written = 0
        index = 0
        while written < target_bytes or index < min_frames:
            frame = pool[index % len(pool)]
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                written += packet.size
                container.mux(packet)
            index += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# -- PostgreSQL ----------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str) -> Iterator[str]:
    """Create a fresh database next to ``admin_url``'s, yield its URL, drop it after."""
    import asyncio

    import asyncpg

    admin_url = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"uploadpools_bench_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base, _, _ = admin_url.partition("?")[0].rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
