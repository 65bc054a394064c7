"""Where media bytes live.

Everything above this module talks to the ``Storage`` protocol only: objects
are addressed by a relative, slash-separated key (``ab/cd/<id>.mp4``), written
once from an async stream of chunks, read back as an async stream (optionally a
byte range), and, for tools that need a real file (PyAV/FFmpeg), exposed
through ``local_copy``.

That seam is what lets an S3-compatible store be added later without touching
callers: ``put_stream`` maps onto a multipart upload (hashing and counting
while streaming, aborting the upload when the size limit is crossed, so
nothing becomes visible under the key), ``open_read`` onto ranged ``GetObject``
requests, ``size``/``exists`` onto ``HeadObject``, ``delete`` onto
``DeleteObject``, and ``local_copy`` onto a download to a temporary file that
is removed when the context exits.  Keys are validated the same way for every
backend, so a key that works locally works on S3.

``LocalStorage`` is the filesystem implementation.  Writes go to a hidden
temporary file next to the final one, are fsynced, and are then renamed over
the key with ``os.replace``, so readers see either the old object, the new
object, or nothing, never a partial file.  All filesystem work runs in worker
threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import anyio
import anyio.to_thread

from uploadpools.kit.fsutil import fsync_dir

__all__ = [
    "LocalStorage",
    "MediaTooLarge",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "StoredObject",
    "human_size",
    "validate_key",
]

_MAX_KEY_LENGTH = 512
_IOV_MAX = 1024  # POSIX minimum is 16; Linux allows 1024
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; for messages shown to people."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


class MediaTooLarge(Exception):
    """The media is bigger than the configured limit (``limit``, in bytes)."""

    def __init__(self, limit: int, message: str | None = None) -> None:
        super().__init__(
            message or f"the file is larger than the limit of {human_size(limit)} ({limit} bytes)"
        )
        self.limit = limit


class StorageError(Exception):
    """A storage operation failed or was given an unusable key."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object under key {key!r}")
        self.key = key


def validate_key(key: str) -> str:
    """Return ``key`` if it is an acceptable object key, else raise ``StorageError``.

    Keys are relative, ``/``-separated paths whose segments use only
    ``A-Z a-z 0-9 . _ -``.  Absolute paths, backslashes, ``..``, empty
    segments and segments starting with a dot (reserved for temporary files)
    are refused.
    """
    if not isinstance(key, str) or not key:
        raise StorageError("storage key must be a non-empty string")
    if len(key) > _MAX_KEY_LENGTH:
        raise StorageError(f"storage key is longer than {_MAX_KEY_LENGTH} characters")
    if "\\" in key:
        raise StorageError(f"storage key {key!r} must not contain backslashes")
    if key.startswith("/"):
        raise StorageError(f"storage key {key!r} must be relative, not an absolute path")
    for segment in key.split("/"):
        if segment == "..":
            raise StorageError(f"storage key {key!r} must not contain '..'")
        if not _SEGMENT_RE.fullmatch(segment):
            raise StorageError(
                f"storage key {key!r} has an invalid segment {segment!r}; segments use only "
                "letters, digits, '.', '_' and '-', and do not start with '.'"
            )
    return key


@runtime_checkable
class Storage(Protocol):
    """Backend-neutral object storage for media files (see the module docstring)."""

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredObject:
        """Store the streamed bytes under ``key`` and return size and SHA-256.

        Raises ``MediaTooLarge`` as soon as more than ``max_bytes`` arrive.  On
        any failure (including cancellation) nothing is left behind and an
        existing object under ``key`` is untouched; on success the new object
        replaces it atomically.
        """
        ...

    # Declared without ``async`` on purpose: implementations are ``async def``
    # generators, which are plain functions returning an async iterator.
    def open_read(
        self, key: str, *, chunk_size: int = 1 << 20, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the object's bytes ``[start, end)`` (``end`` exclusive, ``None`` = to the end).

        Raises ``ObjectNotFound`` on first iteration if there is no such object.
        """
        ...

    async def size(self, key: str) -> int:
        """Size in bytes; ``ObjectNotFound`` if missing."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """Context manager giving a local file path with the object's bytes.

        The path is only valid inside the context and must be treated as
        read-only.  ``ObjectNotFound`` if missing.
        """
        ...


class _TempWriter:
    """Blocking helper: a temp file beside ``target`` that becomes ``target``."""

    def __init__(self, target: Path, *, fsync: bool) -> None:
        self.target = target
        self.fsync = fsync
        self.hasher = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        self.tmp_path = Path(tmp_name)
        # Unbuffered: all writes go through ``os.writev`` on the descriptor.
        self.file: BinaryIO | None = os.fdopen(fd, "wb", buffering=0)

    def hash_pieces(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.hasher.update(piece)

    def write_pieces(self, pieces: list[bytes]) -> None:
        """Write all pieces with ``writev`` (no joining copy), retrying short writes."""
        assert self.file is not None
        fd = self.file.fileno()
        views = [memoryview(p) for p in pieces]
        while views:
            written = os.writev(fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def commit(self) -> None:
        assert self.file is not None
        if self.fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.tmp_path, self.target)
        if self.fsync:
            fsync_dir(self.target.parent)

    def discard(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


async def _write_batch(key: str, writer: _TempWriter, pieces: list[bytes]) -> None:
    """Hash and write a batch in two worker threads at once.

    Both hashlib and file writes release the GIL, so SHA-256 costs no extra
    wall time on top of the disk write.
    """
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, writer.hash_pieces, pieces)
            await _file_op(key, writer.write_pieces, pieces)
    except BaseExceptionGroup as group:
        # Only the write can fail in practice; surface it unwrapped.
        raise group.exceptions[0] from None


async def _file_op(key: str, func: Callable[..., None], *args: Any) -> None:
    """Run a blocking file operation in a thread; OS errors become ``StorageError``.

    Only our own file operations are translated: an ``OSError`` raised by the
    caller's chunk source (say, a reset connection) propagates unchanged.
    """
    try:
        await anyio.to_thread.run_sync(func, *args)
    except OSError as exc:
        raise StorageError(f"writing {key!r} failed: {exc}") from exc


class LocalStorage:
    """``Storage`` over a directory tree on the local filesystem.

    Objects are created with mode 0600 (``mkstemp``'s default): the application
    itself is the only intended reader.  Directories created for keys are not
    removed again when objects are deleted.
    """

    def __init__(
        self, root: Path | str, *, write_chunk_size: int = 1 << 20, fsync: bool = True
    ) -> None:
        self.root = Path(root).resolve()
        self._write_chunk_size = write_chunk_size
        self._fsync = fsync

    def path_for(self, key: str) -> Path:
        """Filesystem path of ``key`` (validated; the file need not exist)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredObject:
        target = self.path_for(key)
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        try:
            writer = await anyio.to_thread.run_sync(lambda: _TempWriter(target, fsync=self._fsync))
        except OSError as exc:
            raise StorageError(f"cannot create a file for {key!r}: {exc}") from exc

        try:
            size = 0
            pending: list[bytes] = []
            pending_len = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLarge(max_bytes)
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= self._write_chunk_size:
                    await _write_batch(key, writer, pending)
                    pending = []
                    pending_len = 0
            if pending:
                await _write_batch(key, writer, pending)
            await _file_op(key, writer.commit)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.discard)
            raise
        return StoredObject(key=key, size=size, sha256=writer.hasher.hexdigest())

    async def open_read(
        self, key: str, *, chunk_size: int = 1 << 20, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range start={start} end={end}")
        try:
            fh = await anyio.to_thread.run_sync(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        try:
            if start:
                await anyio.to_thread.run_sync(fh.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                data = await anyio.to_thread.run_sync(fh.read, want)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(fh.close)

    async def size(self, key: str) -> int:
        path = self.path_for(key)
        try:
            st = await anyio.to_thread.run_sync(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return st.st_size

    async def exists(self, key: str) -> bool:
        return await anyio.to_thread.run_sync(self.path_for(key).is_file)

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        except IsADirectoryError:
            return
        except OSError as exc:
            raise StorageError(f"deleting {key!r} failed: {exc}") from exc

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        return self._local_copy(key)

    @asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self.path_for(key)
        if not await anyio.to_thread.run_sync(path.is_file):
            raise ObjectNotFound(key)
        yield path
