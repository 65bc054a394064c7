"""``S3Storage``: the ``Storage`` protocol on an S3-compatible bucket (AWS S3, MinIO, …).

A small client over httpx with AWS Signature Version 4, rather than boto3: the app
already depends on httpx, stays async without a thread per request, and does not load
botocore's service models (tens of MB) into every process. Imported only when
``UPLOADPOOLS_STORAGE=s3``.

How each operation maps (path-style URLs, ``{endpoint}/{bucket}/{prefix}{key}``):

* ``put_stream``: bytes are counted and hashed while they stream; up to one part
  (``part_size``, 8 MiB) is buffered. A body that fits in one part is one ``PutObject``;
  a larger one is a multipart upload, each part sent as soon as it is full, completed at
  the end, aborted on any failure (size limit, a broken source, cancellation), so
  nothing ever becomes visible under the key and the previous object stays intact.
* ``open_read``: one ``GetObject`` with a ``Range`` header, streamed in ``chunk_size``
  pieces; the signed media URL endpoint proxies these ranged reads to the client.
* ``size`` / ``exists``: ``HeadObject``; ``delete``: ``DeleteObject``.
* ``local_copy``: a download to a private temporary file, removed on exit (probing
  with PyAV needs a real file).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import anyio
import anyio.to_thread
import httpx

from uploadpools.media.storage import (
    MediaTooLarge,
    ObjectNotFound,
    StorageError,
    StoredObject,
    validate_key,
)

__all__ = ["S3Storage", "sigv4_headers"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
_PREFIX_RE = re.compile(r"([A-Za-z0-9_-][A-Za-z0-9._-]*/)*")


def _uri_encode(value: str, *, slash: bool = True) -> str:
    return quote(value, safe="-_.~" + ("/" if not slash else ""))


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    *,
    method: str,
    url: httpx.URL,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime,
    service: str = "s3",
) -> dict[str, str]:
    """The headers that sign this request (AWS Signature Version 4, header form).

    ``url`` carries scheme, host, port and the already-encoded path; ``query`` the raw
    query parameters; ``headers`` extra headers to sign (``host``, ``x-amz-date`` and
    ``x-amz-content-sha256`` are added).
    """
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed |= {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    names = sorted(signed)
    canonical_query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            method,
            url.raw_path.decode("ascii").split("?", 1)[0] or "/",
            canonical_query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in signed.items() if k != "host"}
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def _error_code(body: bytes) -> str:
    with contextlib.suppress(ElementTree.ParseError):
        root = ElementTree.fromstring(body)
        code = root.findtext("Code") or root.findtext("{*}Code")
        if code:
            return code
    return ""


class S3Storage:
    """``Storage`` on an S3-compatible bucket (see the module docstring)."""

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        prefix: str = "",
        part_size: int = 8 * 1024 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"invalid S3 prefix {prefix!r}")
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.endpoint = (endpoint_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        self._access_key = access_key_id
        self._secret_key = secret_access_key
        self.part_size = part_size
        self._client = client
        self._own_client = client is None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- requests ------------------------------------------------------------------------

    def _url(self, key: str | None) -> httpx.URL:
        path = f"/{_uri_encode(self.bucket)}"
        if key is not None:
            path += "/" + _uri_encode(self.prefix + key, slash=False)
        return httpx.URL(self.endpoint + path)

    def _build(
        self,
        method: str,
        key: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        payload_sha256: str | None = None,
    ) -> httpx.Request:
        query = dict(query or {})
        url = self._url(key)
        signed = sigv4_headers(
            method=method,
            url=url,
            query=query,
            headers=headers or {},
            payload_sha256=payload_sha256 or hashlib.sha256(body).hexdigest(),
            access_key=self._access_key,
            secret_key=self._secret_key,
            region=self.region,
            # SigV4 is checked against real time (±15 min), never the app's test clock.
            now=datetime.now(UTC),
        )
        qs = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items()))
        full = httpx.URL(str(url) + (f"?{qs}" if qs else ""))
        return self.client.build_request(method, full, headers=signed, content=body)

    async def _send(self, request: httpx.Request, key: str | None) -> httpx.Response:
        try:
            response = await self.client.send(request)
        except httpx.HTTPError as exc:
            raise StorageError(f"S3 {request.method} {key or self.bucket!r} failed: {exc}") from exc
        if response.status_code == 404 and key is not None:
            raise ObjectNotFound(key)
        if response.status_code >= 300:
            code = _error_code(response.content) or response.reason_phrase
            raise StorageError(
                f"S3 {request.method} {key or self.bucket!r} answered {response.status_code} {code}"
            )
        return response

    async def _call(
        self, method: str, key: str | None, *, body: bytes = b"", **kw: object
    ) -> httpx.Response:
        payload = kw.pop("payload_sha256", None)
        if payload is None and body:
            payload = await anyio.to_thread.run_sync(lambda: hashlib.sha256(body).hexdigest())
        req = self._build(method, key, body=body, payload_sha256=payload, **kw)  # type: ignore[arg-type]
        return await self._send(req, key)

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (tests, first start of a compose stack)."""
        head = await self.client.send(self._build("HEAD", None))
        if head.status_code == 200:
            return
        await self._call("PUT", None)

    # -- Storage -------------------------------------------------------------------------

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredObject:
        validate_key(key)
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        hasher = hashlib.sha256()
        size = 0
        buf = bytearray()
        upload_id: str | None = None
        parts: list[tuple[int, str]] = []
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLarge(max_bytes)
                buf += chunk
                while len(buf) >= self.part_size:
                    if upload_id is None:
                        upload_id = await self._create_upload(key)
                    data, buf = bytes(buf[: self.part_size]), bytearray(buf[self.part_size :])
                    await anyio.to_thread.run_sync(hasher.update, data)
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, data))
            data = bytes(buf)
            buf = bytearray()
            await anyio.to_thread.run_sync(hasher.update, data)
            if upload_id is None:
                await self._call("PUT", key, body=data)
            else:
                if data:
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, data))
                await self._complete(key, upload_id, parts)
        except BaseException:
            if upload_id is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._call("DELETE", key, query={"uploadId": upload_id})
            raise
        return StoredObject(key=key, size=size, sha256=hasher.hexdigest())

    async def _create_upload(self, key: str) -> str:
        r = await self._call("POST", key, query={"uploads": ""})
        root = ElementTree.fromstring(r.content)
        upload_id = next((el.text for el in root.iter() if el.tag.endswith("UploadId")), None)
        if not upload_id:
            raise StorageError(f"S3 did not return an upload id for {key!r}")
        return upload_id

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes
    ) -> tuple[int, str]:
        r = await self._call(
            "PUT", key, body=data, query={"partNumber": str(number), "uploadId": upload_id}
        )
        return number, r.headers.get("etag", "")

    async def _complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        body = (
            "<CompleteMultipartUpload>"
            + "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in parts
            )
            + "</CompleteMultipartUpload>"
        ).encode()
        r = await self._call("POST", key, body=body, query={"uploadId": upload_id})
        # S3 can answer 200 with an error document when completion fails late.
        code = _error_code(r.content)
        if code and code != "CompleteMultipartUploadResult":
            raise StorageError(f"S3 could not complete the upload of {key!r}: {code}")

    async def open_read(
        self, key: str, *, chunk_size: int = 1 << 20, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        validate_key(key)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range start={start} end={end}")
        if end == start:
            await self.size(key)  # ObjectNotFound when missing; nothing to read otherwise
            return
        headers = {"range": f"bytes={start}-{'' if end is None else end - 1}"}
        request = self._build("GET", key, headers=headers, payload_sha256=EMPTY_SHA256)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise StorageError(f"S3 GET {key!r} failed: {exc}") from exc
        try:
            if response.status_code == 404:
                raise ObjectNotFound(key)
            if response.status_code == 416:
                return  # the range starts at or past the end: no bytes
            if response.status_code >= 300:
                await response.aread()
                code = _error_code(response.content) or response.reason_phrase
                raise StorageError(f"S3 GET {key!r} answered {response.status_code} {code}")
            try:
                async for piece in response.aiter_bytes(chunk_size):
                    yield piece
            except httpx.HTTPError as exc:
                raise StorageError(f"reading {key!r} from S3 failed: {exc}") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def size(self, key: str) -> int:
        validate_key(key)
        r = await self._call("HEAD", key)
        return int(r.headers.get("content-length", "0"))

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        validate_key(key)
        with contextlib.suppress(ObjectNotFound):
            await self._call("DELETE", key)

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        return self._local_copy(key)

    @asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        validate_key(key)
        fd, name = tempfile.mkstemp(prefix="uploadpools-", suffix=".media")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for piece in self.open_read(key):
                    await anyio.to_thread.run_sync(fh.write, piece)
            yield path
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    async def list_keys(self) -> list[str]:
        """Every key under the prefix (operators' checks and tests; pages through)."""
        keys: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": self.prefix}
            if token:
                query["continuation-token"] = token
            r = await self._call("GET", None, query=query)
            root = ElementTree.fromstring(r.content)
            for el in root.iter():
                if el.tag.endswith("Contents"):
                    k = next((c.text for c in el if c.tag.endswith("Key")), None)
                    if k:
                        keys.append(k.removeprefix(self.prefix))
            token = next(
                (el.text for el in root.iter() if el.tag.endswith("NextContinuationToken")), None
            )
            if not token:
                return sorted(keys)

    async def pending_uploads(self) -> int:
        """Multipart uploads started and neither completed nor aborted (should be 0)."""
        r = await self._call("GET", None, query={"uploads": ""})
        root = ElementTree.fromstring(r.content)
        return sum(1 for el in root.iter() if el.tag.endswith("Upload"))
