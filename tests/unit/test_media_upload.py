from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from uploadpools.media.storage import LocalStorage, MediaTooLarge
from uploadpools.media.upload import MAX_FIELD_BYTES, UploadError, receive_multipart

KEY = "ws/aa/01upload"
MAX_BYTES = 1_000_000
BOUNDARY = "testboundary1234"


def build_app(storage: LocalStorage) -> Starlette:
    async def upload(request: Request) -> JSONResponse:
        try:
            received = await receive_multipart(request, storage, KEY, max_bytes=MAX_BYTES)
        except UploadError as exc:
            return JSONResponse({"field": exc.field, "error": str(exc)}, status_code=400)
        except MediaTooLarge as exc:
            return JSONResponse({"error": str(exc), "limit": exc.limit}, status_code=413)
        stored = received.stored
        return JSONResponse(
            {
                "fields": received.fields,
                "filename": received.filename,
                "content_type": received.file_content_type,
                "stored": None
                if stored is None
                else {"key": stored.key, "size": stored.size, "sha256": stored.sha256},
            }
        )

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media", fsync=False)


@pytest.fixture
async def client(storage: LocalStorage) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(storage))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def stored_files(storage: LocalStorage) -> list[Path]:
    return (
        sorted(p for p in storage.root.rglob("*") if p.is_file()) if storage.root.exists() else []
    )


def part(
    name: str, value: bytes, *, filename: str | None = None, ctype: str | None = None
) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = f"Content-Disposition: {disposition}\r\n"
    if ctype:
        headers += f"Content-Type: {ctype}\r\n"
    return f"--{BOUNDARY}\r\n{headers}\r\n".encode() + value + b"\r\n"


def body_of(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


async def post_raw(client: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    all_headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **headers}
    return await client.post("/upload", content=body, headers=all_headers)


class TestSuccessfulUploads:
    async def test_fields_and_file_are_received(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        data = os.urandom(300_000)

        response = await client.post(
            "/upload",
            data={"title": "Sunset", "caption": "déjà vu ✓"},
            files={"file": ("clip.mp4", data, "video/mp4")},
        )

        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["fields"] == {"title": "Sunset", "caption": "déjà vu ✓"}
        assert payload["filename"] == "clip.mp4"
        assert payload["content_type"] == "video/mp4"
        assert payload["stored"] == {
            "key": KEY,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        assert storage.path_for(KEY).read_bytes() == data

    async def test_file_bytes_resembling_boundaries_survive(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        tricky = (b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n--x\r\n\r\n") * 20_000

        response = await post_raw(client, body_of(part("file", tricky, filename="a.bin")))

        assert response.status_code == 200, response.text
        assert storage.path_for(KEY).read_bytes() == tricky

    async def test_body_streamed_in_small_chunks_is_reassembled(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        data = os.urandom(200_000)
        body = body_of(part("title", b"t"), part("file", data, filename="v.mp4"))

        async def trickle() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 1_000):
                yield body[i : i + 1_000]

        response = await client.post(
            "/upload",
            content=trickle(),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )

        assert response.status_code == 200, response.text
        assert response.json()["fields"] == {"title": "t"}
        assert storage.path_for(KEY).read_bytes() == data

    async def test_fields_only_gives_no_stored_object(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        response = await post_raw(client, body_of(part("title", b"No file here")))

        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["stored"] is None
        assert payload["filename"] is None
        assert payload["fields"] == {"title": "No file here"}
        assert stored_files(storage) == []

    async def test_empty_browser_file_input_means_no_file(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        body = body_of(
            part("title", b"x"), part("file", b"", filename="", ctype="application/octet-stream")
        )

        response = await post_raw(client, body)

        assert response.status_code == 200, response.text
        assert response.json()["stored"] is None
        assert stored_files(storage) == []


class TestSizeLimits:
    async def test_file_over_limit_is_refused_and_nothing_stored(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        response = await client.post(
            "/upload", files={"file": ("big.mp4", b"\0" * (MAX_BYTES + 1), "video/mp4")}
        )

        assert response.status_code == 413
        assert response.json()["limit"] == MAX_BYTES
        assert stored_files(storage) == []

    async def test_file_of_exactly_the_limit_is_accepted(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        response = await post_raw(client, body_of(part("file", b"\1" * MAX_BYTES, filename="f")))

        assert response.status_code == 200, response.text
        assert response.json()["stored"]["size"] == MAX_BYTES

    async def test_huge_declared_content_length_is_refused_unread(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        read = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal read
            for _ in range(100):
                read += 1
                yield b"\0" * 65_536

        response = await client.post(
            "/upload",
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(50 * MAX_BYTES),
            },
        )

        assert response.status_code == 413
        assert read <= 1
        assert stored_files(storage) == []

    async def test_text_field_over_64_kib_is_refused(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        body = body_of(
            part("file", b"video", filename="v.mp4"), part("caption", b"a" * (MAX_FIELD_BYTES + 1))
        )

        response = await post_raw(client, body)

        assert response.status_code == 400
        assert response.json()["field"] == "caption"
        assert "64.0 KiB" in response.json()["error"]
        assert stored_files(storage) == []  # the already stored file was removed


class TestMalformedBodies:
    async def test_garbage_body_is_malformed(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        response = await post_raw(client, b"this is not multipart at all")

        assert response.status_code == 400
        assert response.json()["field"] == "body"
        assert "malformed" in response.json()["error"]

    async def test_body_cut_before_closing_boundary_is_refused_and_cleaned_up(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        body = body_of(part("file", os.urandom(50_000), filename="v.mp4"), close=False)

        response = await post_raw(client, body[:-20])

        assert response.status_code == 400
        assert "closing boundary" in response.json()["error"]
        assert stored_files(storage) == []

    async def test_missing_boundary_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/upload", content=b"--x--\r\n", headers={"Content-Type": "multipart/form-data"}
        )

        assert response.status_code == 400
        assert "no boundary" in response.json()["error"]

    async def test_non_multipart_content_type_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/upload", json={"file": "nope"})

        assert response.status_code == 400
        assert "application/json" in response.json()["error"]

    async def test_second_file_part_is_refused(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        body = body_of(
            part("file", b"first", filename="a.mp4"), part("file", b"second", filename="b.mp4")
        )

        response = await post_raw(client, body)

        assert response.status_code == 400
        assert response.json()["field"] == "file"
        assert "only one file" in response.json()["error"]
        assert stored_files(storage) == []

    async def test_file_in_unexpected_field_is_refused(
        self, client: httpx.AsyncClient, storage: LocalStorage
    ) -> None:
        response = await post_raw(client, body_of(part("thumbnail", b"img", filename="t.jpg")))

        assert response.status_code == 400
        assert response.json()["field"] == "thumbnail"

    async def test_duplicate_text_field_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await post_raw(client, body_of(part("title", b"a"), part("title", b"b")))

        assert response.status_code == 400
        assert response.json()["field"] == "title"

    async def test_invalid_utf8_field_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await post_raw(client, body_of(part("title", b"\xff\xfe")))

        assert response.status_code == 400
        assert "UTF-8" in response.json()["error"]


def direct_request(messages: list[dict], *, on_receive=None) -> Request:
    """A Starlette request fed from a list of ASGI messages."""
    queue = list(messages)

    async def receive() -> dict:
        if on_receive is not None:
            on_receive()
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
    }
    return Request(scope, receive)


class CountingStorage(LocalStorage):
    """LocalStorage that counts the bytes it has consumed so far."""

    consumed = 0

    async def put_stream(self, key, chunks, *, max_bytes):
        async def counted():
            async for chunk in chunks:
                self.consumed += len(chunk)
                yield chunk

        return await super().put_stream(key, counted(), max_bytes=max_bytes)


class TestStreaming:
    async def test_file_reaches_storage_while_body_is_still_arriving(self, tmp_path: Path) -> None:
        storage = CountingStorage(tmp_path / "media", fsync=False)
        chunk = b"\7" * 65_536
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="v"\r\n\r\n'
        messages = [{"type": "http.request", "body": head.encode(), "more_body": True}]
        messages += [{"type": "http.request", "body": chunk, "more_body": True}] * 100
        messages.append(
            {"type": "http.request", "body": f"\r\n--{BOUNDARY}--\r\n".encode(), "more_body": False}
        )
        received_calls = 0
        consumed_midway: list[int] = []

        def on_receive() -> None:
            nonlocal received_calls
            received_calls += 1
            if received_calls == 80:
                consumed_midway.append(storage.consumed)

        received = await receive_multipart(
            direct_request(messages, on_receive=on_receive),
            storage,
            KEY,
            max_bytes=10 * MAX_BYTES,
        )

        assert received.stored is not None
        assert received.stored.size == 100 * len(chunk)
        # Back-pressure: storage was never more than the small channel behind.
        assert consumed_midway[0] >= 50 * len(chunk)

    async def test_client_disconnect_mid_file_leaves_nothing(self, storage: LocalStorage) -> None:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="v"\r\n\r\n'
        messages = [
            {"type": "http.request", "body": head.encode() + b"x" * 300_000, "more_body": True},
            {"type": "http.disconnect"},
        ]

        with pytest.raises(ClientDisconnect):
            await receive_multipart(direct_request(messages), storage, KEY, max_bytes=MAX_BYTES)

        assert stored_files(storage) == []
