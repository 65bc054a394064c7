"""Enqueue benchmark: JSON enqueues per second, their latency, and a big streamed upload.

    .venv/bin/python bench/enqueue.py [--store sqlite|postgres] [--requests N]
        [--concurrency C] [--upload-mb M] [--client raw|httpx] [--client-procs P]

Starts a real ``uploadpools serve`` on a fresh temp data dir (and, with
``--store postgres``, a fresh database that is dropped afterwards), then:

1. JSON phase: a warm-up, then N ``POST /api/v1/pools/{id}/videos`` with
   ``{"video_url", "title"}`` from C concurrent keep-alive connections; every
   answer must be 201. The ``video_url`` points at a small real MP4 served by
   this process, so the server's media fetcher really downloads and probes
   each one in the background, as in production.
2. Waits for that fetch backlog to drain and checks every item's media is ready.
3. Upload phase: one multipart upload of a ~M MB H.264 MP4, streamed from disk.

The server's RSS (with its children: the probe child) is sampled every 50 ms
throughout, each physical page counted once (see ``RssSampler``). The last line
printed is the summary:

    enqueue: rate=<n>/s p99=<x>ms upload=<y>MB/s rss=<z>MB

"MB" is MiB. See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import (
    MB,
    FileServer,
    RssSampler,
    ServerProcess,
    cached_large_mp4,
    cpu_seconds,
    free_port,
    install_sigterm_as_exit,
    machine_busy_seconds,
    make_small_mp4,
    quantiles_ms,
    temporary_postgres_database,
)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
WARMUP_REQUESTS = 200
FETCH_DRAIN_TIMEOUT_S = 900.0

# What the product promises (checked and shown in the report; not an exit status).
GOAL_RATE = 1000.0
GOAL_P99_MS = 50.0
GOAL_RSS_MB = 150.0


class BenchFailed(Exception):
    """The run cannot produce honest figures (a request failed, a check did not hold)."""


# -- the JSON load generator ---------------------------------------------------------------


@dataclass
class LoadSpec:
    base_url: str
    api_key: str
    pool_id: str
    video_url: str
    first: int  # index of this client's first request (for titles)
    count: int
    warmup: int
    concurrency: int
    client: str = "raw"  # "raw" or "httpx"


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, measured requests only
    statuses: Counter[str] = field(default_factory=Counter)  # warm-up included
    errors: list[str] = field(default_factory=list)  # a few samples of non-201 answers
    started: float = 0.0  # time.monotonic(), system-wide on Linux, so comparable across processes
    finished: float = 0.0
    cpu_s: float = 0.0  # CPU time of the client's event-loop thread during the measured part


class _HttpxSender:
    """One keep-alive connection through its own ``httpx.AsyncClient``.

    One client per connection rather than one client with a pool of C: httpx's
    shared pool gets slower per request as C grows (measured against a trivial
    server: ~1 ms of client CPU per request at C=8, ~3 ms at C=32, with
    multi-second stalls), which would make the client the bottleneck.
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.client = httpx.AsyncClient(
            base_url=spec.base_url,
            headers={"Authorization": f"Bearer {spec.api_key}"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=60.0,
        )

    async def post_json(self, path: str, body: bytes) -> tuple[str, str]:
        try:
            r = await self.client.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__, str(exc)
        return str(r.status_code), r.text if r.status_code != 201 else ""

    async def aclose(self) -> None:
        await self.client.aclose()


class _RawSender:
    """A minimal HTTP/1.1 keep-alive client on an asyncio stream (``--client raw``).

    It only speaks what this benchmark needs (a POST with a Content-Length body,
    answers with a Content-Length), at a fraction of httpx's CPU cost per
    request, so that on a small machine the client does not eat the CPU the
    server needs.
    """

    def __init__(self, spec: LoadSpec) -> None:
        url = httpx.URL(spec.base_url)
        self.host = url.host
        self.port = url.port or 80
        self.head = (
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {spec.api_key}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: bytes) -> tuple[str, str]:
        try:
            return await self._post(path, body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.aclose()
            return type(exc).__name__, str(exc)

    async def _post(self, path: str, body: bytes) -> tuple[str, str]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.head, len(body), body)
        )
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1]
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise ValueError("chunked answers are not supported by the raw client")
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length is None:
            raise ValueError("answer without Content-Length")
        data = await self.reader.readexactly(length)
        if close:
            await self.aclose()
        return status, data.decode("utf-8", "replace") if status != "201" else ""

    async def aclose(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _drive(
    senders: list[Any],
    spec: LoadSpec,
    indices: range,
    result: LoadResult,
    *,
    label: str,
    record: bool,
) -> None:
    path = f"/api/v1/pools/{spec.pool_id}/videos"
    url = json.dumps(spec.video_url)
    it = iter(indices)  # shared by the workers; safe, nothing awaits between next() calls

    async def worker(sender: Any) -> None:
        for i in it:
            body = b'{"video_url": %s, "title": "%s %d"}' % (url.encode(), label.encode(), i)
            t0 = time.perf_counter()
            status, detail = await sender.post_json(path, body)
            elapsed = time.perf_counter() - t0
            if record:
                result.latencies.append(elapsed)
            result.statuses[status] += 1
            if status != "201" and len(result.errors) < 5:
                result.errors.append(f"{status} {detail[:300]}".strip())

    await asyncio.gather(*(worker(s) for s in senders))


async def run_load(spec: LoadSpec, on_start: Callable[[], None] | None = None) -> LoadResult:
    """Warm up, call ``on_start`` (a barrier or a bookkeeping hook), then the measured run."""
    kind = _RawSender if spec.client == "raw" else _HttpxSender
    senders = [kind(spec) for _ in range(spec.concurrency)]
    result = LoadResult()
    try:
        if spec.warmup:
            await _drive(senders, spec, range(spec.warmup), result, label="warm-up", record=False)
        if on_start is not None:
            on_start()
        result.started = time.monotonic()
        cpu0 = time.thread_time()
        await _drive(
            senders,
            spec,
            range(spec.first, spec.first + spec.count),
            result,
            label="bench",
            record=True,
        )
        result.cpu_s = time.thread_time() - cpu0
        result.finished = time.monotonic()
    finally:
        for s in senders:
            await s.aclose()
    return result


def _client_process(spec: LoadSpec, barrier: Any, results: Any) -> None:
    """Entry point of one client process (``--client-procs`` > 1)."""
    try:
        results.put(asyncio.run(run_load(spec, on_start=lambda: barrier.wait(300))))
    except BaseException as exc:
        barrier.abort()
        results.put(f"client process failed: {exc!r}\n{traceback.format_exc()}")


@dataclass
class PhaseStats:
    wall_s: float
    result: LoadResult
    client_cpu_s: float
    server_cpu_s: float
    machine_busy_s: float  # CPU seconds all processes on the machine used (all cores)


def json_phase(
    args: argparse.Namespace,
    base: LoadSpec,
    server: psutil.Process,
    sampler: RssSampler,
) -> PhaseStats:
    marks: dict[str, float] = {}

    def started() -> None:
        sampler.phase = "json"
        marks["server_cpu0"] = cpu_seconds(server)
        marks["machine_busy0"] = machine_busy_seconds()

    procs = max(1, args.client_procs)
    if procs == 1:
        sampler.phase = "json warm-up"
        result = asyncio.run(run_load(base, on_start=started))
        combined = result
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(procs + 1)
        results = ctx.Queue()
        children = []
        first = base.first
        for k in range(procs):
            count = base.count // procs + (1 if k < base.count % procs else 0)
            conc = max(1, base.concurrency // procs + (1 if k < base.concurrency % procs else 0))
            spec = LoadSpec(
                base.base_url,
                base.api_key,
                base.pool_id,
                base.video_url,
                first=first,
                count=count,
                warmup=base.warmup // procs + (1 if k < base.warmup % procs else 0),
                concurrency=conc,
                client=base.client,
            )
            first += count
            p = ctx.Process(target=_client_process, args=(spec, barrier, results), daemon=True)
            p.start()
            children.append(p)
        sampler.phase = "json warm-up"
        parts: list[Any] = []
        try:
            try:
                barrier.wait(600)
            except threading.BrokenBarrierError:
                with contextlib.suppress(queue.Empty):
                    parts.append(results.get(timeout=5))
                raise BenchFailed(f"a client process failed to start: {parts[:1]}") from None
            started()
            deadline = time.monotonic() + 3600
            while len(parts) < len(children):
                try:
                    parts.append(results.get(timeout=1))
                except queue.Empty:
                    dead = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                    if dead:
                        raise BenchFailed(f"a client process died (exit status {dead[0]})")
                    if time.monotonic() > deadline:
                        raise BenchFailed("the client processes did not finish within an hour")
        finally:
            for p in children:
                p.join(10)
                if p.is_alive():
                    p.terminate()
        failures = [p for p in parts if isinstance(p, str)]
        if failures:
            raise BenchFailed(failures[0])
        combined = LoadResult(
            started=min(p.started for p in parts), finished=max(p.finished for p in parts)
        )
        for p in parts:
            combined.latencies.extend(p.latencies)
            combined.statuses.update(p.statuses)
            combined.errors.extend(p.errors)
            combined.cpu_s += p.cpu_s
    server_cpu = cpu_seconds(server) - marks["server_cpu0"]
    machine_busy = machine_busy_seconds() - marks["machine_busy0"]
    sampler.phase = "after json"
    return PhaseStats(
        wall_s=combined.finished - combined.started,
        result=combined,
        client_cpu_s=combined.cpu_s,
        server_cpu_s=server_cpu,
        machine_busy_s=machine_busy,
    )


# -- after the JSON phase: the background fetches ------------------------------------------


def media_states(client: httpx.Client, pool_id: str) -> Counter[str]:
    """Count the queued items of the pool by media state (walks the whole queue).

    Lists ``status=queued`` (queue order, cheap to page); an item whose fetch
    failed would have been skipped and so be missing from the count.
    """
    counts: Counter[str] = Counter()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, "status": "queued"}
        if cursor:
            params["cursor"] = cursor
        r = client.get(f"/api/v1/pools/{pool_id}/videos", params=params)
        r.raise_for_status()
        page = r.json()
        for item in page["items"]:
            counts[item["media"]["state"]] += 1
        cursor = page.get("next_cursor")
        if not cursor:
            return counts


def wait_for_fetches(client: httpx.Client, pool_id: str) -> tuple[float, Counter[str]]:
    """Wait until no item's media is pending; returns (seconds waited, media state counts)."""
    t0 = time.monotonic()
    # Cheap poll first: the newest item is among the last to be fetched.
    while True:
        r = client.get(f"/api/v1/pools/{pool_id}/videos", params={"limit": 1})
        r.raise_for_status()
        items = r.json()["items"]
        if not items or items[0]["media"]["state"] != "pending":
            break
        if time.monotonic() - t0 > FETCH_DRAIN_TIMEOUT_S:
            raise BenchFailed("the background fetches did not finish in time")
        time.sleep(0.2)
    while True:
        counts = media_states(client, pool_id)
        if not counts["pending"]:
            return time.monotonic() - t0, counts
        if time.monotonic() - t0 > FETCH_DRAIN_TIMEOUT_S:
            raise BenchFailed(f"the background fetches did not finish in time: {dict(counts)}")
        time.sleep(0.5)


# -- the upload phase ----------------------------------------------------------------------


class _TimedFile(io.FileIO):
    """A file whose reads note when the last byte was handed to the HTTP client."""

    eof_at: float | None = None

    def read(self, size: int = -1, /) -> bytes:
        data = super().read(size)
        if not data and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return data


@dataclass
class UploadStats:
    size: int
    total_s: float
    send_s: float
    answer_after_body_s: float
    client_cpu_s: float
    server_cpu_s: float
    item: dict[str, Any]


def upload_phase(
    client: httpx.Client, pool_id: str, path: Path, server: psutil.Process, sampler: RssSampler
) -> UploadStats:
    size = path.stat().st_size
    sampler.phase = "upload"
    server_cpu0 = cpu_seconds(server)
    client_cpu0 = time.thread_time()
    with _TimedFile(path, "rb") as fh:
        t0 = time.perf_counter()
        r = client.post(
            f"/api/v1/pools/{pool_id}/videos",
            data={"title": "bench upload"},
            files={"file": (path.name, fh, "video/mp4")},
            timeout=httpx.Timeout(1800.0, connect=10.0),
        )
        t1 = time.perf_counter()
        eof_at = fh.eof_at or t1
    client_cpu = time.thread_time() - client_cpu0
    server_cpu = cpu_seconds(server) - server_cpu0
    sampler.phase = "after upload"
    if r.status_code != 201:
        raise BenchFailed(f"the upload answered {r.status_code}: {r.text[:500]}")
    item = r.json()
    media = item["media"]
    if media["state"] != "ready" or media["size"] != size:
        raise BenchFailed(f"the uploaded media is not as sent: {media}")
    return UploadStats(
        size=size,
        total_s=t1 - t0,
        send_s=eof_at - t0,
        answer_after_body_s=t1 - eof_at,
        client_cpu_s=client_cpu,
        server_cpu_s=server_cpu,
        item=item,
    )


# -- the run -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="server to create the run's throw-away database on (with --store postgres)",
    )
    p.add_argument("--requests", type=int, default=5000, help="measured JSON enqueues (N)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent connections (C)")
    p.add_argument("--upload-mb", type=int, default=1024, help="upload size in MB; 0 skips it")
    p.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="client processes sharing N and C (default 1; see README)",
    )
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a minimal HTTP/1.1 client (default; ~20-50 us of CPU per"
        " request) or httpx (~1 ms per request: on 2 cores it caps the rate near 1,000/s"
        " and takes the CPU the server needs)",
    )
    p.add_argument("--warmup", type=int, default=WARMUP_REQUESTS, help="unmeasured requests first")
    p.add_argument(
        "--pool-state",
        choices=("paused", "active"),
        default="paused",
        help="state of the pool enqueued to (active pools forecast expected_at)",
    )
    p.add_argument(
        "--no-engine",
        action="store_true",
        help="serve with --no-engine: no background fetches of the video_urls",
    )
    p.add_argument(
        "--rss-trace",
        type=Path,
        metavar="CSV",
        help="write every RSS sample to CSV (s, phase, MB: tree, server, children, shared)",
    )
    args = p.parse_args(argv)
    if args.requests < 0 or args.concurrency < 1 or args.upload_mb < 0 or args.client_procs < 1:
        p.error("--requests and --upload-mb must be >= 0, --concurrency and --client-procs >= 1")
    return args


def setup_pool(client: httpx.Client, state: str) -> str:
    r = client.post(
        "/api/v1/accounts",
        json={"platform": "folder", "name": "bench", "config": {"path": "bench"}},
    )
    if r.status_code != 201:
        raise BenchFailed(f"creating the account answered {r.status_code}: {r.text[:500]}")
    account_id = r.json()["id"]
    r = client.post(
        "/api/v1/pools",
        json={
            "name": "bench",
            "timezone": "UTC",
            "state": state,
            "slots": [{"time": "09:00", "account_ids": [account_id]}],
        },
    )
    if r.status_code != 201:
        raise BenchFailed(f"creating the pool answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["id"])


def _pct(cpu_s: float, wall_s: float) -> str:
    return f"{100 * cpu_s / wall_s:.0f}%" if wall_s > 0 else "-"


def _ok(good: bool) -> str:
    return "ok" if good else "MISSED"


def run(args: argparse.Namespace, workdir: Path, database_url: str | None) -> str:
    out = print
    load_before = os.getloadavg()[0]
    # Inputs first, so generating them is neither timed nor sampled.
    small = make_small_mp4(workdir / "small.mp4").read_bytes()
    upload_path = None
    if args.upload_mb:
        t0 = time.monotonic()
        upload_path = cached_large_mp4(args.upload_mb)
        took = time.monotonic() - t0
        note = f"generated in {took:.1f} s" if took > 1 else "cached"
        out(f"upload file: {upload_path} ({upload_path.stat().st_size / MB:.0f} MB, {note})")

    data_dir = workdir / "data"
    settings = {
        "UPLOADPOOLS_DATA_DIR": str(data_dir),
        "UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1/32",
        "UPLOADPOOLS_MAX_UPLOAD_BYTES": str(max(64 * MB, 2 * args.upload_mb * MB)),
    }
    if database_url:
        settings["UPLOADPOOLS_DATABASE_URL"] = database_url

    with FileServer({"/v.mp4": small}) as files:
        server = ServerProcess(
            workdir,
            settings,
            port=free_port(),
            extra_args=["--no-engine"] if args.no_engine else [],
        )
        server.start()
        sampler = RssSampler(server.pid, trace=args.rss_trace)
        sampler.start()
        try:
            t0 = time.monotonic()
            server.wait_ready()
            out(
                f"server: pid {server.pid}, {server.base_url}, ready in {time.monotonic() - t0:.1f} s"
            )
            sampler.phase = "idle"
            api_key = server.credentials(data_dir)["api_key"]
            proc = psutil.Process(server.pid)
            headers = {"Authorization": f"Bearer {api_key}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60.0) as client:
                pool_id = setup_pool(client, args.pool_state)
                idle_rss = sampler.last

                spec = LoadSpec(
                    server.base_url, api_key, pool_id, files.url("/v.mp4"),
                    first=0, count=args.requests, warmup=args.warmup,
                    concurrency=args.concurrency, client=args.client,
                )  # fmt: skip
                js: PhaseStats | None = None
                drain_s, states = 0.0, Counter[str]()
                if args.requests:
                    js = json_phase(args, spec, proc, sampler)
                    res = js.result
                    bad = {k: v for k, v in res.statuses.items() if k != "201"}
                    if bad:
                        raise BenchFailed(
                            f"not every enqueue answered 201: {dict(res.statuses)}; e.g. "
                            + " | ".join(res.errors)
                        )
                    if len(res.latencies) != args.requests:
                        raise BenchFailed(
                            f"{len(res.latencies)} of {args.requests} requests measured"
                        )
                    if not args.no_engine:
                        sampler.phase = "fetch backlog"
                        drain_s, states = wait_for_fetches(client, pool_id)
                        want = args.requests + args.warmup
                        if states["ready"] != want:
                            raise BenchFailed(
                                f"after the fetches, media states are {dict(states)}; "
                                f"expected {want} ready"
                            )
                fetched_by_us = files.requests

                up = None
                if upload_path is not None:
                    up = upload_phase(client, pool_id, upload_path, proc, sampler)
        except BenchFailed as exc:
            raise BenchFailed(
                f"{exc}\n-- server log, last lines --\n{server.log_tail(15)}"
            ) from None
        finally:
            sampler.stop()
            status = server.stop()
        problems = server.log_problems()

    # -- report --
    peaks = {k: v / MB for k, v in sampler.peaks.items()}
    rss_peak = sampler.peak / MB
    out("")
    out(f"== uploadpools enqueue benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ==")
    out(
        f"store {args.store}; {psutil.cpu_count()} CPUs; pool {args.pool_state}; "
        f"engine {'off' if args.no_engine else 'on'}; "
        f"client: {args.client_procs} process(es), {args.client}, "
        f"{args.concurrency} keep-alive connections"
    )
    rate, p99 = 0.0, 0.0
    if js is None:
        out("JSON enqueue: skipped (--requests 0)")
    else:
        q = quantiles_ms(js.result.latencies)
        rate, p99 = args.requests / js.wall_s, q["p99"]
        out(
            f"JSON enqueue: {args.requests} requests (+{args.warmup} warm-up) in {js.wall_s:.2f} s"
            f" = {rate:.0f}/s   [goal >= {GOAL_RATE:.0f}/s: {_ok(rate >= GOAL_RATE)}]"
        )
        out(
            f"  latency ms: p50 {q['p50']:.1f}  p90 {q['p90']:.1f}  p99 {p99:.1f}"
            f"  max {q['max']:.1f}   [goal p99 < {GOAL_P99_MS:.0f}: {_ok(p99 < GOAL_P99_MS)}]"
        )
        out(
            f"  CPU during the phase: server {_pct(js.server_cpu_s, js.wall_s)} of a core, "
            f"client event loop(s) {_pct(js.client_cpu_s, js.wall_s)}"
            f" ({js.client_cpu_s / args.requests * 1e6:.0f} us/request client,"
            f" {js.server_cpu_s / args.requests * 1e6:.0f} us/request server)"
        )
        other = max(0.0, js.machine_busy_s - js.server_cpu_s - js.client_cpu_s)
        out(
            f"  machine: {_pct(js.machine_busy_s, js.wall_s * (psutil.cpu_count() or 1))} of all"
            f" CPUs busy; everything else {_pct(other, js.wall_s)} of a core (other programs,"
            + (" PostgreSQL," if args.store == "postgres" else "")
            + " this benchmark's file server)"
            + f"; load average before the run {load_before:.1f}"
        )
        if js.client_cpu_s > 0.6 * js.wall_s * args.client_procs:
            out(
                "  WARNING: the client was busy most of the phase and may be the bottleneck; "
                "rerun with --client raw (the default) or more --client-procs to check"
            )
        if not args.no_engine:
            out(
                f"  background fetches: {states['ready']} video_urls fetched and probed "
                f"({fetched_by_us} GETs served); backlog drained {drain_s:.1f} s after the phase"
            )
    if up is not None:
        mbps = up.size / MB / up.total_s
        out(
            f"upload: {up.size / MB:.0f} MB in {up.total_s:.2f} s = {mbps:.1f} MB/s "
            f"(body sent in {up.send_s:.2f} s; answer {up.answer_after_body_s * 1000:.0f} ms "
            f"after the last byte)"
        )
        out(
            f"  CPU during the upload: server {_pct(up.server_cpu_s, up.total_s)}, "
            f"client {_pct(up.client_cpu_s, up.total_s)}; "
            f"media {up.item['media']['content_type']}, {up.item['media']['duration_s']:.1f} s, "
            f"{up.item['media']['width']}x{up.item['media']['height']}"
        )
    else:
        mbps = 0.0
    counted_once = (
        "each physical page counted once"
        if sampler.frames_readable
        else "page frames unreadable here, so shared library pages counted once per process"
    )
    out(
        f"server RSS (process tree, {counted_once}; every 50 ms): idle {idle_rss / MB:.0f} MB;"
        " peak by phase: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + f" MB; overall peak {rss_peak:.0f} MB ({sampler.samples} samples)"
    )
    out(
        "  the plain sum of the processes' RSS (counting the libraries both load twice): "
        + ", ".join(f"{k} {v / MB:.0f}" for k, v in sampler.sum_peaks.items())
        + f" MB; overall {max(sampler.sum_peaks.values(), default=0) / MB:.0f} MB"
    )
    out(
        "  of which the server process alone: "
        + ", ".join(f"{k} {v / MB:.0f}" for k, v in sampler.own_peaks.items())
        + " MB; its children (the migration child at startup, the probe child): "
        + ", ".join(f"{k} {v / MB:.0f}" for k, v in sampler.children_peaks.items())
        + " MB"
    )
    if sampler.private_peaks:
        out(
            "  private memory of the tree (USS, every 200 ms; library code shared with other"
            " processes not counted): "
            + ", ".join(f"{k} {v / MB:.0f}" for k, v in sampler.private_peaks.items())
            + " MB"
        )
    if up is not None:
        upload_peak = peaks.get("upload", 0.0)
        out(
            f"  peak while uploading {up.size / MB:.0f} MB: {upload_peak:.0f} MB"
            f"   [goal < {GOAL_RSS_MB:.0f} MB: {_ok(upload_peak < GOAL_RSS_MB)}]"
        )
    if problems:
        out(f"server log: {len(problems)} warning/error line(s), e.g. {problems[0][:200]}")
    if status not in (0, -15, None):  # uvicorn re-raises the SIGTERM it handled
        out(f"server exit status after SIGTERM: {status}")
    return f"enqueue: rate={rate:.0f}/s p99={p99:.1f}ms upload={mbps:.1f}MB/s rss={rss_peak:.0f}MB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_as_exit()
    workdir = Path(tempfile.mkdtemp(prefix="uploadpools-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.store == "postgres":
                try:
                    database_url = stack.enter_context(
                        temporary_postgres_database(args.postgres_url)
                    )
                except Exception as exc:  # asyncpg's errors and OSError alike
                    raise BenchFailed(
                        f"cannot create a database at {args.postgres_url}: {exc!r}"
                    ) from None
            summary = run(args, workdir, database_url)
    except BenchFailed as exc:
        print(f"enqueue: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
