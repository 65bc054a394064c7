"""The `folder` target: write the video and a JSON sidecar into a directory.

Files land in ``<root>/<config.path>/``, where the root is
``UPLOADPOOLS_FOLDER_TARGETS_ROOT`` (default ``<data dir>/folders``), named
``<scheduled_for as YYYYmmddTHHMMSSZ>_<item id>.<mp4|mov|webm|mkv>`` and ``….json``.

Writes are atomic: both files are written to hidden temporary names in the target
directory and fsynced; the job (the final video path) is saved; then the video is
renamed into place and the sidecar last, so a watcher that reacts to ``*.json`` always
finds a complete video beside it. A failure at any point leaves nothing under the final
names and no temporary files.

The target directory must resolve (symlinks followed) inside the root; a symlink that
leads out is refused. Disk full, permission and other file-system errors are
``Permanent``: retrying would not help until someone fixes the disk. A failure to read
the media from storage is ``Transient`` (nothing was written, retrying is safe), or
``Permanent`` when the stored object is gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError

from uploadpools.connectors.base import (
    UNKNOWN,
    ConnectorContext,
    JobStore,
    MediaConstraints,
    Permanent,
    PublishRequest,
    PublishResult,
    Reconciled,
    Transient,
)
from uploadpools.connectors.folder import FolderConfig, folder_target_root
from uploadpools.kit.fsutil import fsync_dir
from uploadpools.media.storage import ObjectNotFound, StorageError

__all__ = ["EXTENSIONS", "FolderConnector"]

EXTENSIONS = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
    "video/x-matroska": "mkv",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
T = TypeVar("T")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def file_stem(scheduled_for: datetime, item_id: str) -> str:
    return f"{scheduled_for.astimezone(UTC):%Y%m%dT%H%M%SZ}_{_UNSAFE.sub('_', item_id)}"


def _describe(exc: OSError, shown: str) -> str:
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"the disk holding folder {shown!r} is full (or over quota)"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: the server cannot write into folder {shown!r}"
    if code == errno.EROFS:
        return f"folder {shown!r} is on a read-only file system"
    if code in (errno.EEXIST, errno.ENOTDIR):
        return f"folder {shown!r} (or a part of its path) exists and is not a directory"
    return f"writing into folder {shown!r} failed: {exc.strerror or exc}"


# -- blocking helpers, run in worker threads -------------------------------------------------


def _inside(path: Path, real_root: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == real_root or real_root in real.parents


def _prepare_directory(root: Path, rel: str) -> Path:
    """The real target directory, created if missing; Permanent when it escapes the root."""
    target = Path(os.path.normpath(os.path.join(root, rel)))
    escape = Permanent(
        f"folder {rel!r} lies outside the folder-target root; the server writes only there"
    )
    if target != root and root not in target.parents:
        raise escape
    root.mkdir(parents=True, exist_ok=True)
    real_root = Path(os.path.realpath(root))
    # Checked before mkdir too, so a symlink out of the root is never followed to
    # create directories elsewhere; and after, on what was actually created.
    if not _inside(target, real_root):
        raise escape
    target.mkdir(parents=True, exist_ok=True)
    if not _inside(target, real_root):
        raise escape
    return Path(os.path.realpath(target))


def _open_temp(final: Path) -> tuple[IO[bytes], Path]:
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    return os.fdopen(fd, "wb"), Path(name)


def _write_chunk(fh: IO[bytes], chunk: bytes, hasher: Any = None) -> None:
    if hasher is not None:
        hasher.update(chunk)  # hashlib releases the GIL: off the event loop, like the write
    fh.write(chunk)


def _finish(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _commit(video_tmp: Path, video: Path, sidecar_tmp: Path, sidecar: Path) -> None:
    os.replace(video_tmp, video)
    try:
        os.replace(sidecar_tmp, sidecar)
    except OSError:
        # Take the video back out: all or nothing under the final names.
        with contextlib.suppress(OSError):
            video.unlink()
        raise
    fsync_dir(video.parent)


@dataclass
class _Temps:
    files: list[IO[bytes]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def discard(self) -> None:
        for fh in self.files:
            with contextlib.suppress(OSError):
                fh.close()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


async def _fs(shown: str, func: Callable[..., T], *args: Any) -> T:
    """Run blocking file-system work in a thread; OS errors become ``Permanent``."""
    try:
        return await anyio.to_thread.run_sync(func, *args)
    except OSError as exc:
        raise Permanent(_describe(exc, shown)) from None


async def _copy_media(request: PublishRequest, fh: IO[bytes], shown: str) -> None:
    media = request.media
    hasher = hashlib.sha256()
    size = 0
    stream = media.open()
    try:
        async for chunk in stream:
            size += len(chunk)
            await _fs(shown, _write_chunk, fh, chunk, hasher)
    except ObjectNotFound:
        raise Permanent("the video is missing from the media storage") from None
    except (StorageError, OSError) as exc:
        # Our own writes raise Permanent (see _fs), so this came from the media source.
        raise Transient(f"reading the video from storage failed: {exc}") from None
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
    if media.sha256 and (size != media.size or hasher.hexdigest() != media.sha256):
        raise Permanent(
            f"the stored video does not match its checksum ({size} bytes read, "
            f"{media.size} expected): storage may be damaged"
        )


class FolderConnector:
    platform: ClassVar[str] = "folder"
    config_model: ClassVar[type[BaseModel]] = FolderConfig
    constraints: ClassVar[MediaConstraints | None] = None

    def __init__(self, ctx: ConnectorContext) -> None:
        self._ctx = ctx

    def sidecar(self, request: PublishRequest, video_name: str) -> dict[str, Any]:
        media = request.media
        return {
            "delivery_id": request.delivery_id,
            "account": {"id": request.account_id, "name": request.account_name},
            "pool": {"id": request.pool_id, "name": request.pool_name},
            "item": {
                "id": request.item_id,
                "title": request.title,
                "caption": request.caption,
                "options": request.options,
            },
            "media": {
                "id": media.id,
                "file": video_name,
                "content_type": media.content_type,
                "size": media.size,
                "sha256": media.sha256,
                "duration_s": media.duration_s,
                "width": media.width,
                "height": media.height,
            },
            "firing": {"id": request.firing_id, "scheduled_for": _iso(request.scheduled_for)},
            "written_at": _iso(self._ctx.clock.now()),
        }

    async def publish(self, request: PublishRequest, jobs: JobStore) -> PublishResult:
        try:
            config = FolderConfig.model_validate(request.config)
        except ValidationError as exc:
            raise Permanent(f"the folder account's settings are invalid: {exc}") from None
        ext = EXTENSIONS.get(request.media.content_type)
        if ext is None:
            raise Permanent(
                f"the folder target writes MP4, MOV, WebM or MKV videos, not "
                f"{request.media.content_type}",
                reason="media_rejected",
            )
        shown = config.path

        root = folder_target_root(self._ctx.settings)
        directory = await _fs(shown, _prepare_directory, root, config.path)
        stem = file_stem(request.scheduled_for, request.item_id)
        video = directory / f"{stem}.{ext}"
        sidecar = directory / f"{stem}.json"

        temps = _Temps()
        try:
            fh, video_tmp = await _fs(shown, _open_temp, video)
            temps.files.append(fh)
            temps.paths.append(video_tmp)
            await _copy_media(request, fh, shown)
            await _fs(shown, _finish, fh)

            body = json.dumps(self.sidecar(request, video.name), indent=2, ensure_ascii=False)
            side_fh, sidecar_tmp = await _fs(shown, _open_temp, sidecar)
            temps.files.append(side_fh)
            temps.paths.append(sidecar_tmp)
            await _fs(shown, _write_chunk, side_fh, (body + "\n").encode())
            await _fs(shown, _finish, side_fh)

            await jobs.save({"path": str(video)})
            await _fs(shown, _commit, video_tmp, video, sidecar_tmp, sidecar)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(temps.discard)
            raise
        return PublishResult(remote_id=video.name, remote_url=video.as_uri())

    async def reconcile(self, request: PublishRequest) -> Reconciled:
        path = request.job.get("path")
        if not path:
            # jobs.save comes before the renames: nothing saved, nothing published.
            return None
        video = Path(path)
        sidecar = video.with_suffix(".json")
        has_video, has_sidecar = await anyio.to_thread.run_sync(
            lambda: (video.is_file(), sidecar.is_file())
        )
        if has_video and has_sidecar:
            return PublishResult(remote_id=video.name, remote_url=video.as_uri())
        if not has_video and not has_sidecar:
            return None
        return UNKNOWN
