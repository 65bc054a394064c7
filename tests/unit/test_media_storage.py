from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from conftest import S3Server
from uploadpools.media.s3 import MIN_PART_SIZE, S3Storage
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


async def read_all(storage: Storage, key: str, **kwargs) -> bytes:
    return b"".join([chunk async for chunk in storage.open_read(key, **kwargs)])


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def stored_keys(storage: Storage) -> list[str]:
    """Everything the backend holds, temporary files and unfinished uploads included."""
    if isinstance(storage, LocalStorage):
        base = storage.root.parent  # bad keys must not escape the root either
        return [p.relative_to(storage.root).as_posix() for p in files_under(base)]
    assert isinstance(storage, S3Storage)
    pending = await storage.pending_uploads()
    return await storage.list_keys() + ["<unfinished multipart upload>"] * pending


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """The same suite runs on local disk and on an S3-compatible server (moto)."""
    if request.param == "local":
        yield LocalStorage(tmp_path / "media", write_chunk_size=64 * 1024)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = S3Storage(
        bucket=request.getfixturevalue("s3_bucket"),
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        endpoint_url=server.endpoint,
        prefix="media",
        part_size=MIN_PART_SIZE,
    )
    yield s3
    await s3.aclose()


class TestPutAndRead:
    async def test_round_trip_returns_size_and_sha256(self, storage: Storage) -> None:
        data = os.urandom(300_000)
        parts = [data[i : i + 7_000] for i in range(0, len(data), 7_000)]

        stored = await storage.put_stream(KEY, chunks_of(parts), max_bytes=1_000_000)

        assert stored == StoredObject(
            key=KEY, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        assert await read_all(storage, KEY, chunk_size=10_000) == data
        assert await storage.size(KEY) == len(data)
        assert await storage.exists(KEY)

    async def test_object_lives_at_key_and_nothing_else_remains(self, storage: Storage) -> None:
        await storage.put_stream(KEY, chunks_of([b"hello"]), max_bytes=100)

        assert await stored_keys(storage) == [KEY]

    async def test_empty_stream_stores_empty_object(self, storage: Storage) -> None:
        stored = await storage.put_stream(KEY, chunks_of([]), max_bytes=10)

        assert stored.size == 0
        assert stored.sha256 == hashlib.sha256(b"").hexdigest()
        assert await read_all(storage, KEY) == b""

    async def test_exactly_max_bytes_is_accepted(self, storage: Storage) -> None:
        stored = await storage.put_stream(KEY, chunks_of([b"x" * 50, b"y" * 50]), max_bytes=100)

        assert stored.size == 100

    async def test_put_replaces_existing_object(self, storage: Storage) -> None:
        await storage.put_stream(KEY, chunks_of([b"old contents"]), max_bytes=100)
        await storage.put_stream(KEY, chunks_of([b"new"]), max_bytes=100)

        assert await read_all(storage, KEY) == b"new"

    async def test_storage_satisfies_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)


class TestSizeLimit:
    async def test_too_large_raises_and_leaves_no_file(self, storage: Storage) -> None:
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
        assert await stored_keys(storage) == []
        assert not await storage.exists(KEY)

    async def test_failed_replacement_keeps_previous_object(self, storage: Storage) -> None:
        await storage.put_stream(KEY, chunks_of([b"keep me"]), max_bytes=100)

        with pytest.raises(MediaTooLarge):
            await storage.put_stream(KEY, chunks_of([b"x" * 101]), max_bytes=100)

        assert await read_all(storage, KEY) == b"keep me"
        assert await stored_keys(storage) == [KEY]

    async def test_error_from_source_stream_leaves_no_file(self, storage: Storage) -> None:
        async def broken() -> AsyncIterator[bytes]:
            yield b"a" * 100_000
            raise ConnectionResetError("peer went away")

        with pytest.raises(ConnectionResetError):
            await storage.put_stream(KEY, broken(), max_bytes=1_000_000)

        assert await stored_keys(storage) == []


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
    async def test_bad_keys_are_rejected(self, storage: Storage, key: str) -> None:
        with pytest.raises(StorageError):
            await storage.put_stream(key, chunks_of([b"x"]), max_bytes=10)
        with pytest.raises(StorageError):
            await storage.exists(key)
        assert await stored_keys(storage) == []

    async def test_nested_keys_create_directories(self, storage: Storage) -> None:
        await storage.put_stream("w1/zz/01abc", chunks_of([b"x"]), max_bytes=10)

        assert await stored_keys(storage) == ["w1/zz/01abc"]
        assert await read_all(storage, "w1/zz/01abc") == b"x"


class TestRanges:
    DATA = bytes(range(256)) * 40  # 10240 bytes

    @pytest.fixture
    async def stored(self, storage: Storage) -> Storage:
        await storage.put_stream(KEY, chunks_of([self.DATA]), max_bytes=len(self.DATA))
        return storage

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, None), (100, None), (0, 1), (100, 5000), (5000, 10240), (10000, 99999), (10240, None)],
    )
    async def test_range_matches_slice(self, stored: Storage, start: int, end: int | None) -> None:
        got = await read_all(stored, KEY, start=start, end=end, chunk_size=777)

        assert got == self.DATA[start:end]

    async def test_chunks_respect_chunk_size(self, stored: Storage) -> None:
        sizes = [len(c) async for c in stored.open_read(KEY, chunk_size=4096)]

        assert sizes == [4096, 4096, 2048]

    async def test_invalid_range_is_rejected(self, stored: Storage) -> None:
        with pytest.raises(ValueError, match="range"):
            await read_all(stored, KEY, start=10, end=5)


class TestMissingObjects:
    async def test_read_size_and_local_copy_raise_not_found(self, storage: Storage) -> None:
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

    async def test_delete_missing_is_fine_and_delete_removes(self, storage: Storage) -> None:
        await storage.delete(KEY)
        await storage.put_stream(KEY, chunks_of([b"x"]), max_bytes=10)

        await storage.delete(KEY)

        assert not await storage.exists(KEY)


class TestLocalCopy:
    async def test_local_copy_has_the_stored_bytes(self, storage: Storage) -> None:
        await storage.put_stream(KEY, chunks_of([b"payload"]), max_bytes=10)

        async with storage.local_copy(KEY) as path:
            if isinstance(storage, LocalStorage):
                assert path == storage.path_for(KEY)  # no copy needed on local disk
            assert path.read_bytes() == b"payload"
        if isinstance(storage, S3Storage):
            assert not path.exists()  # the downloaded copy is removed


class TestS3Only:
    async def test_large_object_goes_up_in_parts_and_reads_back_in_ranges(
        self, s3_server: S3Server, s3_bucket: str
    ) -> None:
        s3 = S3Storage(
            bucket=s3_bucket,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
            endpoint_url=s3_server.endpoint,
            part_size=MIN_PART_SIZE,
        )
        data = os.urandom(2 * MIN_PART_SIZE + 12_345)  # three parts, the last one short
        parts = [data[i : i + 65_536] for i in range(0, len(data), 65_536)]
        try:
            stored = await s3.put_stream(KEY, chunks_of(parts), max_bytes=len(data))
            assert stored.size == len(data)
            assert stored.sha256 == hashlib.sha256(data).hexdigest()
            assert await s3.size(KEY) == len(data)
            start, end = MIN_PART_SIZE - 10, MIN_PART_SIZE + 10  # across a part boundary
            assert await read_all(s3, KEY, start=start, end=end) == data[start:end]
            assert await read_all(s3, KEY) == data
            # One chunk larger than two parts is cut into parts too.
            await s3.put_stream("one/chunk", chunks_of([data]), max_bytes=len(data))
            assert await read_all(s3, "one/chunk") == data

            with pytest.raises(MediaTooLarge):  # crossing the limit in the second part
                await s3.put_stream(KEY, chunks_of(parts), max_bytes=MIN_PART_SIZE + 1)
            assert await s3.pending_uploads() == 0  # the multipart upload was aborted
            assert await read_all(s3, KEY, start=0, end=100) == data[:100]  # old object kept
        finally:
            await s3.aclose()

    def test_signature_matches_the_aws_documented_example(self) -> None:
        # The "GET Object" example of the S3 SigV4 documentation.
        from datetime import UTC, datetime

        import httpx

        from uploadpools.media.s3 import EMPTY_SHA256, sigv4_headers

        headers = sigv4_headers(
            method="GET",
            url=httpx.URL("https://examplebucket.s3.amazonaws.com/test.txt"),
            query={},
            headers={"Range": "bytes=0-9"},
            payload_sha256=EMPTY_SHA256,
            access_key="AKIAIOSFODNN7EXAMPLE",
            secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region="us-east-1",
            now=datetime(2013, 5, 24, tzinfo=UTC),
        )
        assert headers["authorization"] == (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )

    def test_signature_agrees_with_botocore_for_a_query_and_a_port(self) -> None:
        from datetime import UTC, datetime

        import httpx
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        from uploadpools.media.s3 import sigv4_headers

        body = b"part bytes"
        payload = hashlib.sha256(body).hexdigest()
        url = "http://127.0.0.1:9000/bucket/pre%2Ffix/ab/cd.mp4"
        req = AWSRequest(
            method="PUT",
            url=url + "?partNumber=2&uploadId=a%2Bb%2Fc%3D%3D",
            data=body,
            headers={"x-amz-content-sha256": payload},
        )
        S3SigV4Auth(Credentials("AK", "SK"), "s3", "eu-west-1").add_auth(req)
        when = datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        ours = sigv4_headers(
            method="PUT",
            url=httpx.URL(url),
            query={"partNumber": "2", "uploadId": "a+b/c=="},
            headers={},
            payload_sha256=payload,
            access_key="AK",
            secret_key="SK",
            region="eu-west-1",
            now=when,
        )
        assert ours["authorization"] == req.headers["Authorization"]

    def test_settings_select_s3_and_name_what_is_missing(self) -> None:
        from pydantic import ValidationError

        from uploadpools.config import Settings
        from uploadpools.media.service import storage_for

        with pytest.raises(ValidationError) as excinfo:
            Settings(_env_file=None, storage="s3", s3_bucket="b")  # type: ignore[call-arg]
        assert "UPLOADPOOLS_S3_ACCESS_KEY_ID, UPLOADPOOLS_S3_SECRET_ACCESS_KEY" in str(
            excinfo.value
        )
        s = Settings(  # type: ignore[call-arg]
            _env_file=None,
            storage="s3",
            s3_bucket="media",
            s3_access_key_id="ak",
            s3_secret_access_key="sk",
            s3_region="eu-central-1",
            s3_prefix="up",
        )
        st = storage_for(s)
        assert isinstance(st, S3Storage)
        assert (st.endpoint, st.bucket, st.prefix) == (
            "https://s3.eu-central-1.amazonaws.com",
            "media",
            "up/",
        )
        assert isinstance(storage_for(Settings(_env_file=None)), LocalStorage)  # type: ignore[call-arg]
