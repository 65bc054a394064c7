"""Two `uploadpools worker` processes and one `uploadpools serve --no-engine` on PostgreSQL
with S3 media storage (a local moto server): videos uploaded over the HTTP API reach the
receiver once each, in FIFO order, and their media URLs serve the bytes from S3.

Time moves through a shared clock-offset file (see test_workers.py); the test waits for
processes, it never sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conftest import SECRET, Receiver, S3Server, _truncate
from uploadpools.media.s3 import S3Storage

BIN = Path(sys.executable).with_name("uploadpools")
DAY0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.asyncio


def set_fake_now(offset_file: Path, fake: datetime) -> None:
    offset = (fake - datetime.now(UTC)).total_seconds()
    tmp = offset_file.with_suffix(".tmp")
    tmp.write_text(f"{offset:.6f}")
    tmp.replace(offset_file)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check, timeout: float = 90.0, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    """Poll other processes until ``check()`` is true (polling, not moving time).

    The deadline is generous: it only bounds a hang on a loaded machine.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def clean_pg(pg_database: str) -> str:
    _truncate(pg_database)
    return pg_database


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    yield running
    for p in running:
        p.send_signal(signal.SIGTERM)
    for p in running:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


async def test_two_workers_and_an_api_node_on_postgres_and_s3(
    clean_pg: str,
    s3_server: S3Server,
    s3_bucket: str,
    receiver: Receiver,
    sample_mp4: Path,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    offset_file = tmp_path / "clock-offset"
    set_fake_now(offset_file, DAY0 - timedelta(hours=1))
    api_port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADPOOLS_")} | {
        "UPLOADPOOLS_ENV": "test",
        "UPLOADPOOLS_DATABASE_URL": clean_pg,
        "UPLOADPOOLS_SECRET_KEY": SECRET,
        "UPLOADPOOLS_PUBLIC_URL": base,
        "UPLOADPOOLS_CLOCK_OFFSET_FILE": str(offset_file),
        "UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED": "127.0.0.0/8",
        "UPLOADPOOLS_ENGINE_IDLE_SECONDS": "1",
        "UPLOADPOOLS_LOG_FORMAT": "json",
        **s3_server.settings_env(s3_bucket),
    }
    logs = tmp_path / "nodes.log"

    def start(*args: str, data: str) -> None:
        procs.append(
            subprocess.Popen(
                [str(BIN), *args],
                env=env | {"UPLOADPOOLS_DATA_DIR": str(tmp_path / data)},
                stdout=logs.open("ab"),
                stderr=subprocess.STDOUT,
            )
        )

    # The API node migrates the empty database and creates the first user and key.
    start("serve", "--no-engine", "--port", str(api_port), data="api")
    wait_for("the API node", lambda: answers(base + "/healthz"), log=logs)
    start("worker", "--metrics-port", str(metrics_port), data="w1")
    start("worker", data="w2")
    key = json.loads((tmp_path / "api" / "initial-credentials.json").read_text())["api_key"]
    auth = {"Authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as api:
        r = await api.post(
            "/api/v1/accounts",
            json={"platform": "webhook", "name": "sink", "config": {"url": receiver.url}},
        )
        assert r.status_code == 201, r.text
        r = await api.post(
            "/api/v1/pools",
            json={
                "name": "Daily",
                "timezone": "UTC",
                "state": "active",
                "slots": [{"time": "09:00", "account_ids": [r.json()["id"]]}],
            },
        )
        assert r.status_code == 201, r.text
        pool_id = r.json()["id"]
        for i in range(3):
            with sample_mp4.open("rb") as f:
                r = await api.post(
                    f"/api/v1/pools/{pool_id}/videos",
                    files={"file": ("v.mp4", f, "video/mp4")},
                    data={"title": f"video-{i}"},
                )
            assert r.status_code == 201, r.text

        # The media went to the bucket, not to any node's disk.
        s3 = S3Storage(
            bucket=s3_bucket,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
            endpoint_url=s3_server.endpoint,
        )
        assert len(await s3.list_keys()) == 3
        await s3.aclose()
        assert not list((tmp_path / "api").rglob("media/**/*.*"))

        # Both workers beat; the API node is ready because they do.
        def ready() -> bool:
            try:
                r = httpx.get(base + "/readyz", timeout=10)
            except httpx.TransportError:
                return False
            return r.status_code == 200 and r.json()["checks"]["engine"].get("live_nodes") == 2

        await asyncio.to_thread(wait_for, "two live workers in /readyz", ready, 90.0, logs)
        status = subprocess.run(
            [str(BIN), "status"],
            env=env | {"UPLOADPOOLS_DATA_DIR": str(tmp_path / "api")},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        workers = [line.split() for line in status.stdout.splitlines() if " worker " in line]
        assert [w[2:4] for w in workers] == [
            ["ticker,dispatcher,fetcher,webhooks,mailer", "alive"]
        ] * 2

        expected = sample_mp4.read_bytes()
        for day in range(3):
            set_fake_now(offset_file, DAY0 + timedelta(days=day, seconds=1))
            await asyncio.to_thread(
                wait_for,
                f"delivery {day + 1}",
                lambda n=day + 1: len(receiver.requests) >= n,
                90.0,
                logs,
            )
            # The signed media URL (valid for a day) serves the bytes from S3, ranges too.
            url = json.loads(receiver.requests[-1]["body"])["media"]["url"].removeprefix(base)
            media = await api.get(url)
            assert media.status_code == 200
            assert media.content == expected
            part = await api.get(url, headers={"Range": "bytes=10-99"})
            assert part.status_code == 206 and part.content == expected[10:100]

        got = [json.loads(r["body"]) for r in receiver.requests]
        assert [g["item"]["title"] for g in got] == ["video-0", "video-1", "video-2"]
        assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 3

        r = await api.get("/api/v1/pools/" + pool_id + "/videos", params={"status": "dispatched"})
        assert r.status_code == 200
        assert len(r.json()["items"] if isinstance(r.json(), dict) else r.json()) == 3

    # The worker with a metrics port counts what it posted (the other worker did the rest).
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "uploadpools_deliveries_total" in text
    assert "uploadpools_firing_lateness_seconds_count" in text
    assert len(receiver.requests) == 3  # nothing sent twice
