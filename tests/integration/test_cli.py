"""The `uploadpools` command, run as a user would: real processes on a real database."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from uploadpools.config import Settings

BIN = Path(sys.executable).with_name("uploadpools")


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "UPLOADPOOLS_DATA_DIR": str(settings.data_dir),
        "UPLOADPOOLS_DATABASE_URL": settings.database_url or "",
        "UPLOADPOOLS_SECRET_KEY": settings.secret(),
    }
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


class TestUsersAndKeys:
    def test_create_user_then_key_that_authenticates(self, settings: Settings) -> None:
        r = run_cli(settings, "users", "create", "Ann@Example.com", "--plan", "paid")
        assert r.returncode == 0, r.stderr
        assert "created ann@example.com (plan paid)" in r.stdout
        assert re.search(r"password: \S{12,}", r.stdout)
        r = run_cli(settings, "api-keys", "create", "--email", "ann@example.com", "--name", "n8n")
        assert r.returncode == 0, r.stderr
        key = r.stdout.strip()
        assert key.startswith("up_")
        r = run_cli(settings, "users", "create", "ann@example.com")
        assert r.returncode == 1
        assert "already registered" in r.stderr

    def test_unknown_user_key_is_an_error(self, settings: Settings) -> None:
        r = run_cli(settings, "api-keys", "create", "--email", "ghost@example.com")
        assert r.returncode == 1
        assert "no user" in r.stderr

    def test_migrate_is_repeatable(self, settings: Settings) -> None:
        for _ in range(2):
            r = run_cli(settings, "migrate")
            assert r.returncode == 0, r.stderr
            assert "up to date" in r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestServe:
    def test_first_start_prints_login_and_a_working_key(self, tmp_path: Path) -> None:
        """`make run` on a fresh machine: empty data dir → migrated, first user, key printed."""
        data = tmp_path / "fresh"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADPOOLS_")} | {
            "UPLOADPOOLS_DATA_DIR": str(data)
        }
        proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            lines: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                # "Application startup complete" comes before the socket is bound;
                # "Uvicorn running on …" after it.
                if "Uvicorn running" in line:
                    break
            out = "".join(lines)
            assert "Login         admin@localhost" in out, out
            key = re.search(r"API key\s+(up_\S+)", out)
            password = re.search(r"Password\s+(\S+)", out)
            assert key and password, out
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/usage",
                headers={"Authorization": f"Bearer {key.group(1)}"},
                timeout=10,
            )
            assert r.status_code == 200
            assert r.json()["limit"] == 13
            assert (data / "uploadpools.db").exists()
            assert (data / "secret_key").stat().st_mode & 0o077 == 0
            creds = json.loads((data / "initial-credentials.json").read_text())
            assert creds["api_key"] == key.group(1)
            assert (data / "initial-credentials.json").stat().st_mode & 0o077 == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


class TestStatus:
    async def test_status_lists_nodes_with_age_state_and_in_flight(
        self, settings: Settings
    ) -> None:
        from datetime import UTC, datetime, timedelta

        from uploadpools.models import EngineNode
        from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope

        r = run_cli(settings, "status")
        assert r.returncode == 0, r.stderr
        assert "no engine has run" in r.stdout

        now = datetime.now(UTC)
        engine = create_engine(settings)
        async with session_scope(create_sessionmaker(engine)) as s:
            for node, role, loops, beat, stopped in (
                ("hostA:11", "worker", "ticker,dispatcher", now - timedelta(seconds=3), None),
                ("hostB:22", "serve", None, now - timedelta(minutes=10), None),
                ("hostC:33", "worker", "fetcher", now - timedelta(minutes=20), now),
            ):
                s.add(
                    EngineNode(
                        id=node,
                        hostname=node.split(":")[0],
                        pid=int(node.split(":")[1]),
                        role=role,
                        roles=loops,
                        started_at=now - timedelta(hours=1),
                        heartbeat_at=beat,
                        stopped_at=stopped,
                    )
                )
        await engine.dispose()
        r = run_cli(settings, "status")
        assert r.returncode == 0, r.stderr
        rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
        assert rows["hostA:11"][1:4] == ["worker", "ticker,dispatcher", "alive"]
        assert rows["hostA:11"][-1] == "0"
        assert rows["hostB:22"][1:4] == ["serve", "-", "silent"]
        assert 600 <= int(rows["hostB:22"][4].removesuffix("s")) < 900
        assert rows["hostC:33"][1:4] == ["worker", "fetcher", "stopped"]
