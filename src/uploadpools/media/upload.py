"""Receive a ``multipart/form-data`` upload straight into storage.

Starlette's ``request.form()`` spools files to a temporary file first, which
for a large video means writing it twice and, before that, holding whole
parts in memory.  ``receive_multipart`` instead feeds ``request.stream()`` to
python-multipart's streaming ``MultipartParser`` and pipes the file part's
bytes to ``Storage.put_stream`` through a small bounded channel:

    request.stream() -> MultipartParser.write() -> channel (bounded) -> put_stream()

Parsing runs on the event loop (the parser searches for the boundary with
``bytes.find``, so the cost per network chunk is small and there are no
per-byte Python loops); hashing and disk writes run in worker threads inside
``put_stream``.  When storage falls behind, the channel fills up and reading
from the client pauses, so memory stays bounded whatever the upload size.

Text fields are collected in memory with small limits.  Any failure (bad
multipart, limits, client disconnect, cancellation) leaves nothing in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from uploadpools.media.storage import MediaTooLarge, Storage, StoredObject, human_size

__all__ = [
    "CONTENT_LENGTH_SLACK",
    "MAX_FIELD_BYTES",
    "MAX_PARTS",
    "ReceivedUpload",
    "UploadError",
    "receive_multipart",
]

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 64
# Multipart framing and text fields legitimately add to the body beyond the
# file itself; a declared Content-Length beyond this slack is refused unread.
CONTENT_LENGTH_SLACK = 1 << 20
# Chunks waiting between the parser and storage (each is one network read, up to
# ~300 KB). Four keep the disk busy as well as sixteen did (~300 MB/s for 1 GB on the
# benchmark machine) and hold ~3 MB less of the body in memory.
_CHANNEL_CHUNKS = 4
_MAX_BOUNDARY_LENGTH = 70


@dataclass
class ReceivedUpload:
    fields: dict[str, str]
    stored: StoredObject | None
    filename: str | None
    file_content_type: str | None


class UploadError(Exception):
    """The request body is not an acceptable upload.

    ``field`` names the form field at fault, or ``"body"`` for problems with
    the request as a whole.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


async def receive_multipart(
    request: Request,
    storage: Storage,
    key: str,
    *,
    max_bytes: int,
    file_field: str = "file",
) -> ReceivedUpload:
    """Parse the request's multipart body, storing the ``file_field`` part under ``key``.

    At most one file part is accepted (``stored`` is ``None`` when there is
    none).  Raises ``MediaTooLarge`` once the file exceeds ``max_bytes`` (or
    immediately if ``Content-Length`` makes that certain), and ``UploadError``
    for malformed or unacceptable bodies.  On any exception the stored object,
    if one was written, is deleted.
    """
    boundary = _boundary(request.headers.get("content-type"))
    declared = _declared_length(request.headers.get("content-length"))
    if declared is not None and declared > max_bytes + CONTENT_LENGTH_SLACK:
        raise MediaTooLarge(max_bytes)
    receiver = _Receiver(storage, key, max_bytes=max_bytes, file_field=file_field)
    return await receiver.run(request, boundary)


def _boundary(content_type: str | None) -> bytes:
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        shown = ctype.decode("latin-1") or "none"
        raise UploadError("body", f"expected a multipart/form-data body, got {shown}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("body", "the multipart/form-data Content-Type has no boundary")
    if len(boundary) > _MAX_BOUNDARY_LENGTH:
        raise UploadError("body", "the multipart boundary is longer than 70 characters")
    return boundary


def _declared_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise UploadError("body", f"invalid Content-Length header {value!r}") from None
    if length < 0:
        raise UploadError("body", f"invalid Content-Length header {value!r}")
    return length


def _decode_param(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# Parser events, recorded by the (synchronous) parser callbacks and handled
# asynchronously after each ``write``.
_PART_BEGIN = 0
_HEADERS_DONE = 1
_DATA = 2
_PART_END = 3
_END = 4


class _Receiver:
    def __init__(self, storage: Storage, key: str, *, max_bytes: int, file_field: str) -> None:
        self.storage = storage
        self.key = key
        self.max_bytes = max_bytes
        self.file_field = file_field

        self.events: list[tuple[int, Any]] = []
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []

        self.fields: dict[str, str] = {}
        self.parts = 0
        self.ended = False
        # Kind of the part being parsed: "file", "text", or None between parts.
        self.part_kind: str | None = None
        self.text_name = ""
        self.text_value = bytearray()

        self.file_seen = False
        self.filename: str | None = None
        self.file_content_type: str | None = None
        self.file_pending: list[bytes] = []
        self.send: MemoryObjectSendStream[bytes] | None = None
        self.store_task: asyncio.Task[StoredObject] | None = None
        self.stored: StoredObject | None = None

    # -- parser callbacks (synchronous, called from MultipartParser.write) --

    def _on_part_begin(self) -> None:
        self.events.append((_PART_BEGIN, None))

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _on_header_end(self) -> None:
        self.headers.append((bytes(self.header_name).lower(), bytes(self.header_value)))
        self.header_name.clear()
        self.header_value.clear()

    def _on_headers_finished(self) -> None:
        self.events.append((_HEADERS_DONE, self.headers))
        self.headers = []

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        # Usually the whole network chunk is file data: pass it on uncopied.
        piece = data if start == 0 and end == len(data) else data[start:end]
        self.events.append((_DATA, piece))

    def _on_part_end(self) -> None:
        self.events.append((_PART_END, None))

    def _on_end(self) -> None:
        self.events.append((_END, None))

    # -- driving --

    async def run(self, request: Request, boundary: bytes) -> ReceivedUpload:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        try:
            stream = request.stream()
            try:
                async for chunk in stream:
                    if not chunk:
                        continue
                    try:
                        parser.write(chunk)
                    except FormParserError as exc:
                        raise UploadError("body", f"malformed multipart body: {exc}") from None
                    await self._dispatch()
                    if self.ended:
                        break  # anything after the closing boundary is ignored
            finally:
                await stream.aclose()
            if not self.ended:
                raise UploadError("body", "the multipart body ended before its closing boundary")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abandon()
            raise
        return ReceivedUpload(
            fields=self.fields,
            stored=self.stored,
            filename=self.filename,
            file_content_type=self.file_content_type,
        )

    async def _dispatch(self) -> None:
        events, self.events = self.events, []
        for kind, payload in events:
            if kind == _DATA:
                self._on_data(payload)
            elif kind == _PART_BEGIN:
                self.parts += 1
                if self.parts > MAX_PARTS:
                    raise UploadError("body", f"the form has more than {MAX_PARTS} parts")
            elif kind == _HEADERS_DONE:
                self._start_part(payload)
            elif kind == _PART_END:
                await self._finish_part()
            elif kind == _END:
                self.ended = True
        # Hand this network chunk's file bytes to storage as one piece.
        await self._flush_file_data()

    def _start_part(self, headers: list[tuple[bytes, bytes]]) -> None:
        disposition = next((v for k, v in headers if k == b"content-disposition"), None)
        if disposition is None:
            raise UploadError("body", "a form part has no Content-Disposition header")
        dtype, params = parse_options_header(disposition)
        if dtype != b"form-data" or b"name" not in params:
            raise UploadError("body", "a form part is not a named form-data field")
        name = _decode_param(params[b"name"])
        filename = params.get(b"filename")

        if name == self.file_field:
            if self.file_seen:
                raise UploadError(name, "only one file can be uploaded per request")
            self.file_seen = True
            self.part_kind = "file"
            self.filename = _decode_param(filename) if filename is not None else None
            ctype = next((v for k, v in headers if k == b"content-type"), None)
            self.file_content_type = ctype.decode("latin-1").strip() if ctype else None
            return
        if filename is not None:
            raise UploadError(
                name, f"unexpected file in field {name!r}; send the file as {self.file_field!r}"
            )
        if name in self.fields:
            raise UploadError(name, f"field {name!r} was sent more than once")
        self.part_kind = "text"
        self.text_name = name
        self.text_value.clear()

    def _on_data(self, piece: bytes) -> None:
        if self.part_kind == "file":
            self.file_pending.append(piece)
        elif self.part_kind == "text":
            self.text_value += piece
            if len(self.text_value) > MAX_FIELD_BYTES:
                raise UploadError(
                    self.text_name,
                    f"field {self.text_name!r} is larger than {human_size(MAX_FIELD_BYTES)}",
                )

    async def _flush_file_data(self) -> None:
        if not self.file_pending:
            return
        data = self.file_pending[0] if len(self.file_pending) == 1 else b"".join(self.file_pending)
        self.file_pending.clear()
        if self.send is None:
            self._start_store()
        assert self.send is not None
        try:
            await self.send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # Storage stopped reading: surface its exception (e.g. MediaTooLarge).
            await self._await_store()
            raise  # pragma: no cover - _await_store raises when storage failed

    async def _finish_part(self) -> None:
        kind, self.part_kind = self.part_kind, None
        if kind == "text":
            try:
                self.fields[self.text_name] = self.text_value.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(
                    self.text_name, f"field {self.text_name!r} is not valid UTF-8 text"
                ) from None
            self.text_value.clear()
        elif kind == "file":
            await self._flush_file_data()
            if self.send is None:
                if not self.filename:
                    # No bytes and no file name: a browser's empty file input,
                    # i.e. no file was chosen.
                    self.filename = None
                    self.file_content_type = None
                    return
                self._start_store()  # a named but empty file is still a file
            assert self.send is not None
            self.send.close()
            await self._await_store()

    def _start_store(self) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](max_buffer_size=_CHANNEL_CHUNKS)
        self.send = send
        self.store_task = asyncio.create_task(self._store(receive))

    async def _store(self, receive: MemoryObjectReceiveStream[bytes]) -> StoredObject:
        with receive:
            return await self.storage.put_stream(self.key, receive, max_bytes=self.max_bytes)

    async def _await_store(self) -> None:
        assert self.store_task is not None
        self.stored = await self.store_task

    async def _abandon(self) -> None:
        """Undo everything after a failure: stop storage, delete what it wrote."""
        if self.send is not None:
            self.send.close()
        task = self.store_task
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is None:
                self.stored = task.result()
        if self.stored is not None:
            with contextlib.suppress(Exception):
                await self.storage.delete(self.stored.key)
            self.stored = None
