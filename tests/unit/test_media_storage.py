from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from uploadpools.media.storage import (
    LocalStorage,
    MediaTooLarge,
    ObjectNotFound,
    Storage,
    StorageError,
    StoredObject,
)

KEY = "ab/cd/01hzzzexample.mp4"


async def chunks_of(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(storage: LocalStorage, key: str, **kwargs) -> bytes:
    return b"".join([chunk async for chunk in storage.open_read(key, **kwargs)])


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media", write_chunk_size=64 * 1024)


class TestPutAndRead:
    async def test_round_trip_returns_size_and_sha256(self, storage: LocalStorage) -> None:
        data = os.urandom(300_000)
        parts = [data[i : i + 7_000] for i in range(0, len(data), 7_000)]

        stored = await storage.put_stream(KEY, chunks_of(parts), max_bytes=1_000_000)

        assert stored == StoredObject(
            key=KEY, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        assert await read_all(storage, KEY, chunk_size=10_000) == data
        assert await storage.size(KEY) == len(data)
        assert await storage.exists(KEY)

    async def test_object_lives_at_key_path_and_no_temp_file_remains(
        self, storage: LocalStorage
    ) -> None:
        await storage.put_stream(KEY, chunks_of([b"hello"]), max_bytes=100)

        assert files_under(storage.root) == [storage.root / "ab" / "cd" / "01hzzzexample.mp4"]

    async def test_empty_stream_stores_empty_object(self, storage: LocalStorage) -> None:
        stored = await storage.put_stream(KEY, chunks_of([]), max_bytes=10)

        assert stored.size == 0
        assert stored.sha256 == hashlib.sha256(b"").hexdigest()
        assert await read_all(storage, KEY) == b""

    async def test_exactly_max_bytes_is_accepted(self, storage: LocalStorage) -> None:
        stored = await storage.put_stream(KEY, chunks_of([b"x" * 50, b"y" * 50]), max_bytes=100)

        assert stored.size == 100

    async def test_put_replaces_existing_object(self, storage: LocalStorage) -> None:
        await storage.put_stream(KEY, chunks_of([b"old contents"]), max_bytes=100)
        await storage.put_stream(KEY, chunks_of([b"new"]), max_bytes=100)

        assert await read_all(storage, KEY) == b"new"

    async def test_local_storage_satisfies_protocol(self, storage: LocalStorage) -> None:
        assert isinstance(storage, Storage)


class TestSizeLimit:
    async def test_too_large_raises_and_leaves_no_file(self, storage: LocalStorage) -> None:
        consumed = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal consumed
            while True:
                consumed += 1
                yield b"z" * 40_000

        with pytest.raises(MediaTooLarge) as excinfo:
            await storage.put_stream(KEY, endless(), max_bytes=100_000)

        assert excinfo.value.limit == 100_000
        assert "limit" in str(excinfo.value)
        assert consumed == 3  # stopped as soon as the limit was crossed
        assert files_under(storage.root) == []
        assert not await storage.exists(KEY)

    async def test_failed_replacement_keeps_previous_object(self, storage: LocalStorage) -> None:
        await storage.put_stream(KEY, chunks_of([b"keep me"]), max_bytes=100)

        with pytest.raises(MediaTooLarge):
            await storage.put_stream(KEY, chunks_of([b"x" * 101]), max_bytes=100)

        assert await read_all(storage, KEY) == b"keep me"
        assert files_under(storage.root) == [storage.path_for(KEY)]

    async def test_error_from_source_stream_leaves_no_file(self, storage: LocalStorage) -> None:
        async def broken() -> AsyncIterator[bytes]:
            yield b"a" * 100_000
            raise ConnectionResetError("peer went away")

        with pytest.raises(ConnectionResetError):
            await storage.put_stream(KEY, broken(), max_bytes=1_000_000)

        assert files_under(storage.root) == []


class TestKeys:
    @pytest.mark.parametrize(
        "key",
        [
            "",
            "/etc/passwd",
            "../escape.mp4",
            "ab/../../escape.mp4",
            "ab\\cd.mp4",
            "ab//cd.mp4",
            "ab/cd/",
            "ab/./cd.mp4",
            "ab/.hidden.mp4",
            "ab/cd e.mp4",
            "ab/\x00.mp4",
        ],
    )
    async def test_bad_keys_are_rejected(self, storage: LocalStorage, key: str) -> None:
        with pytest.raises(StorageError):
            await storage.put_stream(key, chunks_of([b"x"]), max_bytes=10)
        with pytest.raises(StorageError):
            await storage.exists(key)
        assert files_under(storage.root.parent) == []

    async def test_nested_keys_create_directories(self, storage: LocalStorage) -> None:
        await storage.put_stream("w1/zz/01abc", chunks_of([b"x"]), max_bytes=10)

        assert (storage.root / "w1" / "zz" / "01abc").read_bytes() == b"x"


class TestRanges:
    DATA = bytes(range(256)) * 40  # 10240 bytes

    @pytest.fixture
    async def stored(self, storage: LocalStorage) -> LocalStorage:
        await storage.put_stream(KEY, chunks_of([self.DATA]), max_bytes=len(self.DATA))
        return storage

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, None), (100, None), (0, 1), (100, 5000), (5000, 10240), (10000, 99999), (10240, None)],
    )
    async def test_range_matches_slice(
        self, stored: LocalStorage, start: int, end: int | None
    ) -> None:
        got = await read_all(stored, KEY, start=start, end=end, chunk_size=777)

        assert got == self.DATA[start:end]

    async def test_chunks_respect_chunk_size(self, stored: LocalStorage) -> None:
        sizes = [len(c) async for c in stored.open_read(KEY, chunk_size=4096)]

        assert sizes == [4096, 4096, 2048]

    async def test_invalid_range_is_rejected(self, stored: LocalStorage) -> None:
        with pytest.raises(ValueError, match="range"):
            await read_all(stored, KEY, start=10, end=5)


class TestMissingObjects:
    async def test_read_size_and_local_copy_raise_not_found(self, storage: LocalStorage) -> None:
        with pytest.raises(ObjectNotFound):
            await read_all(storage, KEY)
        with pytest.raises(ObjectNotFound):
            await storage.size(KEY)
        with pytest.raises(ObjectNotFound):
            async with storage.local_copy(KEY):
                pass
        assert not await storage.exists(KEY)

    async def test_not_found_is_a_storage_error(self) -> None:
        assert issubclass(ObjectNotFound, StorageError)

    async def test_delete_missing_is_fine_and_delete_removes(self, storage: LocalStorage) -> None:
        await storage.delete(KEY)
        await storage.put_stream(KEY, chunks_of([b"x"]), max_bytes=10)

        await storage.delete(KEY)

        assert not await storage.exists(KEY)


class TestLocalCopy:
    async def test_local_copy_is_the_stored_file(self, storage: LocalStorage) -> None:
        await storage.put_stream(KEY, chunks_of([b"payload"]), max_bytes=10)

        async with storage.local_copy(KEY) as path:
            assert path == storage.path_for(KEY)
            assert path.read_bytes() == b"payload"
