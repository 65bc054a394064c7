from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from uploadpools.kit.netguard import parse_networks
from uploadpools.media.fetch import MAX_REDIRECTS, FetchFailed, fetch_to_storage
from uploadpools.media.storage import LocalStorage

LOOPBACK = parse_networks("127.0.0.0/8")
KEY = "fetched/aa/clip.mp4"
BODY = bytes(range(256)) * 400  # 102400 bytes

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


def head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class MiniHttpServer:
    """Just enough HTTP/1.1 on 127.0.0.1 to exercise the fetcher for real."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].decode()
            self.requests.append(path)
            handler = self.routes.get(path)
            if handler is None:
                writer.write(head("404 Not Found", {"Content-Length": "0"}))
            else:
                await handler(writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def server() -> AsyncIterator[MiniHttpServer]:
    srv = MiniHttpServer()
    await srv.start()

    async def video(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", {"Content-Length": str(len(BODY)), "Content-Type": "video/mp4"}))
        w.write(BODY)

    async def chunked_big(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", {"Transfer-Encoding": "chunked"}))
        piece = b"q" * 65536
        for _ in range(80):  # 5 MiB if nobody stops reading
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await w.drain()
        w.write(b"0\r\n\r\n")

    async def declared_big(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", {"Content-Length": "50000000"}))
        w.write(b"x" * 1000)
        await w.drain()
        await asyncio.sleep(30)

    async def slow(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", {"Content-Length": "1000"}))
        w.write(b"x" * 10)
        await w.drain()
        await asyncio.sleep(30)

    def redirect(location: str) -> Handler:
        async def handler(w: asyncio.StreamWriter) -> None:
            w.write(head("302 Found", {"Location": location, "Content-Length": "0"}))

        return handler

    srv.routes.update(
        {
            "/video.mp4": video,
            "/chunked-big": chunked_big,
            "/declared-big": declared_big,
            "/slow": slow,
            "/hop": redirect("/video.mp4"),
            "/hop-absolute": redirect(srv.url("/hop")),
            "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
            "/to-ftp": redirect("ftp://127.0.0.1/x"),
            "/loop": redirect("/loop"),
        }
    )
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media", fsync=False)


def stored_files(storage: LocalStorage) -> list[Path]:
    return (
        sorted(p for p in storage.root.rglob("*") if p.is_file()) if storage.root.exists() else []
    )


async def fetch(
    client: httpx.AsyncClient,
    storage: LocalStorage,
    url: str,
    *,
    max_bytes: int = 1_000_000,
    timeout_s: float = 5.0,
    allowed=LOOPBACK,
):
    return await fetch_to_storage(
        client,
        url,
        storage,
        KEY,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
        allowed_networks=allowed,
    )


class TestSuccessfulFetch:
    async def test_body_is_stored_with_hash(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        stored = await fetch(client, storage, server.url("/video.mp4"))

        assert stored.key == KEY
        assert stored.size == len(BODY)
        assert stored.sha256 == hashlib.sha256(BODY).hexdigest()
        assert storage.path_for(KEY).read_bytes() == BODY

    async def test_redirects_are_followed_and_each_hop_requested(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        stored = await fetch(client, storage, server.url("/hop-absolute"))

        assert stored.size == len(BODY)
        assert server.requests == ["/hop-absolute", "/hop", "/video.mp4"]


class TestRefusals:
    async def test_http_404_is_reported(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed, match=r"HTTP 404 Not Found from http://127\.0\.0\.1"):
            await fetch(client, storage, server.url("/nope.mp4"))

        assert stored_files(storage) == []

    async def test_loopback_refused_without_allowlist(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed, match=r"loopback address 127\.0\.0\.1"):
            await fetch(client, storage, server.url("/video.mp4"), allowed=())

        assert server.requests == []

    async def test_redirect_to_refused_host_is_not_followed(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed) as excinfo:
            await fetch(client, storage, server.url("/to-metadata"))

        message = str(excinfo.value)
        assert "169.254.169.254" in message
        assert "link-local" in message
        assert server.requests == ["/to-metadata"]
        assert stored_files(storage) == []

    async def test_redirect_to_other_scheme_is_refused(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed, match="only http:// and https://"):
            await fetch(client, storage, server.url("/to-ftp"))

    async def test_redirect_loop_stops_after_limit(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed, match="too many redirects"):
            await fetch(client, storage, server.url("/loop"))

        assert len(server.requests) == MAX_REDIRECTS + 1

    async def test_connection_refused_is_reported(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Nothing listens on the port any more.
        with pytest.raises(FetchFailed, match="could not connect"):
            await fetch(client, storage, f"http://127.0.0.1:{port}/video.mp4")

    async def test_an_unparsable_url_is_refused_without_repeating_its_credentials(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(FetchFailed, match=r"(invalid|not a valid) URL") as excinfo:
            await fetch(client, storage, "http://user:s3cret@example.com:99999/v.mp4?sig=abc")

        assert "s3cret" not in str(excinfo.value)
        assert "sig=abc" not in str(excinfo.value)


class TestSizeLimits:
    async def test_declared_content_length_over_limit_is_refused_early(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        started = time.monotonic()

        with pytest.raises(FetchFailed, match="larger than the limit"):
            await fetch(client, storage, server.url("/declared-big"), max_bytes=100_000)

        assert time.monotonic() - started < 2  # did not wait for the body
        assert stored_files(storage) == []

    async def test_streamed_body_over_limit_without_length_is_cut_off(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        with pytest.raises(
            FetchFailed, match=r"larger than the limit of 97\.7 KiB \(100000 bytes\)"
        ):
            await fetch(client, storage, server.url("/chunked-big"), max_bytes=100_000)

        assert stored_files(storage) == []


class TestTimeout:
    async def test_slow_server_times_out_and_leaves_nothing(
        self, server: MiniHttpServer, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        started = time.monotonic()

        with pytest.raises(FetchFailed, match=r"timed out after 0\.5 s"):
            await fetch(client, storage, server.url("/slow"), timeout_s=0.5)

        assert time.monotonic() - started < 3
        assert stored_files(storage) == []


class TestCheckRetryDelay:
    def test_doubles_from_five_minutes_up_to_an_hour(self) -> None:
        from uploadpools.media.service import check_retry_delay

        assert [check_retry_delay(n).total_seconds() for n in range(1, 8)] == [
            300,
            600,
            1200,
            2400,
            3600,
            3600,
            3600,
        ]
