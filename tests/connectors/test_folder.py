"""The folder connector writes into a real directory under tmp_path."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectorhelpers import (
    SCHEDULED,
    VIDEO,
    RecordingJobs,
    media_ref,
    offline_settings_for,
    publish_request,
)
from uploadpools.config import Settings
from uploadpools.connectors.base import (
    UNKNOWN,
    Connector,
    ConnectorContext,
    LeaseLost,
    Permanent,
    PublishResult,
    Transient,
)
from uploadpools.connectors.folder import connector as folder_module
from uploadpools.connectors.folder.connector import FolderConnector
from uploadpools.kit.clock import FrozenClock
from uploadpools.media.storage import ObjectNotFound, StorageError

STEM = "20260302T090000Z_item01"


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    return offline_settings_for(tmp_path)


@pytest.fixture
def root(offline_settings: Settings) -> Path:
    return offline_settings.data_dir / "folders"


@pytest.fixture
def connector(offline_settings: Settings) -> FolderConnector:
    clock = FrozenClock(SCHEDULED)
    return FolderConnector(ConnectorContext(None, offline_settings, clock))  # type: ignore[arg-type]


def tree(directory: Path) -> list[str]:
    """Every file under ``directory`` (hidden temporary files included), relative."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def mkdirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


def failing_after(chunks: int, exc: BaseException) -> Any:
    async def gen(**_: Any) -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield VIDEO[:1000]
        raise exc

    return gen


class TestWrite:
    async def test_writes_the_video_and_its_sidecar(
        self, connector: FolderConnector, root: Path
    ) -> None:
        jobs = RecordingJobs()

        result = await connector.publish(publish_request({"path": "out"}), jobs)

        video = root / "out" / f"{STEM}.mp4"
        assert video.read_bytes() == VIDEO
        assert result == PublishResult(f"{STEM}.mp4", video.resolve().as_uri())
        assert jobs.saved == [{"path": str(video.resolve())}]
        sidecar = json.loads((root / "out" / f"{STEM}.json").read_text())
        assert sidecar == {
            "delivery_id": "del01",
            "account": {"id": "acc01", "name": "out"},
            "pool": {"id": "pool01", "name": "Daily shorts"},
            "item": {
                "id": "item01",
                "title": "Sunrise",
                "caption": "Morning light #sunrise",
                "options": {"tag": "morning"},
            },
            "media": {
                "id": "med01",
                "file": f"{STEM}.mp4",
                "content_type": "video/mp4",
                "size": len(VIDEO),
                "sha256": hashlib.sha256(VIDEO).hexdigest(),
                "duration_s": 1.5,
                "width": 720,
                "height": 1280,
            },
            "firing": {"id": "fir01", "scheduled_for": "2026-03-02T09:00:00Z"},
            "written_at": "2026-03-02T09:00:00Z",
        }

    async def test_is_a_connector(self, connector: FolderConnector) -> None:
        assert isinstance(connector, Connector)
        assert connector.platform == "folder"

    async def test_leaves_exactly_the_two_final_files(
        self, connector: FolderConnector, root: Path
    ) -> None:
        await connector.publish(publish_request({"path": "out"}), RecordingJobs())

        assert tree(root) == [f"out/{STEM}.json", f"out/{STEM}.mp4"]

    @pytest.mark.parametrize(
        ("content_type", "ext"),
        [
            ("video/mp4", "mp4"),
            ("video/quicktime", "mov"),
            ("video/webm", "webm"),
            ("video/x-matroska", "mkv"),
        ],
    )
    async def test_extension_follows_the_content_type(
        self, connector: FolderConnector, root: Path, content_type: str, ext: str
    ) -> None:
        request = publish_request({"path": "out"}, media=media_ref(content_type=content_type))

        await connector.publish(request, RecordingJobs())

        assert (root / "out" / f"{STEM}.{ext}").read_bytes() == VIDEO

    async def test_scheduled_time_is_named_in_utc(
        self, connector: FolderConnector, root: Path
    ) -> None:
        from zoneinfo import ZoneInfo

        local = SCHEDULED.astimezone(ZoneInfo("America/New_York"))

        result = await connector.publish(
            publish_request({"path": "out"}, scheduled_for=local), RecordingJobs()
        )

        assert result.remote_id == f"{STEM}.mp4"

    async def test_job_is_saved_before_the_files_get_their_names(
        self, connector: FolderConnector, root: Path
    ) -> None:
        seen: list[list[str]] = []

        class Jobs(RecordingJobs):
            async def save(self, job: dict[str, Any]) -> None:
                seen.append(tree(root))
                await super().save(job)

        await connector.publish(publish_request({"path": "out"}), Jobs())

        [files] = seen
        assert len(files) == 2
        assert all(Path(f).name.startswith(".") and f.endswith(".part") for f in files)

    async def test_honours_the_folder_targets_root_setting(
        self, offline_settings: Settings, tmp_path: Path
    ) -> None:
        offline_settings.folder_targets_root = tmp_path / "exports"
        connector = FolderConnector(
            ConnectorContext(None, offline_settings, FrozenClock(SCHEDULED))  # type: ignore[arg-type]
        )

        await connector.publish(publish_request({"path": "a/b"}), RecordingJobs())

        assert tree(tmp_path / "exports") == [f"a/b/{STEM}.json", f"a/b/{STEM}.mp4"]

    async def test_unknown_content_type_is_refused(self, connector: FolderConnector) -> None:
        request = publish_request({"path": "out"}, media=media_ref(content_type="image/gif"))

        with pytest.raises(Permanent) as info:
            await connector.publish(request, RecordingJobs())

        assert info.value.reason == "media_rejected"


class TestAtomicity:
    async def test_storage_failure_mid_stream_leaves_nothing(
        self, connector: FolderConnector, root: Path
    ) -> None:
        media = media_ref(opener=failing_after(3, StorageError("disk went away")))
        jobs = RecordingJobs()

        with pytest.raises(Transient, match="disk went away"):
            await connector.publish(publish_request({"path": "out"}, media=media), jobs)

        assert tree(root) == []
        assert jobs.saved == []

    async def test_missing_media_is_permanent(self, connector: FolderConnector, root: Path) -> None:
        media = media_ref(opener=failing_after(0, ObjectNotFound("ws/01/med01")))

        with pytest.raises(Permanent, match="missing"):
            await connector.publish(publish_request({"path": "out"}, media=media), RecordingJobs())

        assert tree(root) == []

    async def test_checksum_mismatch_is_permanent_and_leaves_nothing(
        self, connector: FolderConnector, root: Path
    ) -> None:
        async def gen(**_: Any) -> AsyncIterator[bytes]:
            yield VIDEO[:-1] + b"\x00"  # same size, different bytes

        request = publish_request({"path": "out"}, media=media_ref(opener=gen))

        with pytest.raises(Permanent, match="checksum"):
            await connector.publish(request, RecordingJobs())

        assert tree(root) == []

    async def test_lost_lease_at_save_leaves_nothing(
        self, connector: FolderConnector, root: Path
    ) -> None:
        class Fenced(RecordingJobs):
            async def save(self, job: dict[str, Any]) -> None:
                raise LeaseLost()

        with pytest.raises(LeaseLost):
            await connector.publish(publish_request({"path": "out"}), Fenced())

        assert tree(root) == []

    async def test_cancellation_mid_stream_leaves_nothing(
        self, connector: FolderConnector, root: Path
    ) -> None:
        first_written = asyncio.Event()

        async def stalls(**_: Any) -> AsyncIterator[bytes]:
            yield VIDEO[:1000]
            first_written.set()  # the consumer asks for more only after writing the chunk
            await asyncio.Event().wait()
            yield b""

        task = asyncio.create_task(
            connector.publish(
                publish_request({"path": "out"}, media=media_ref(opener=stalls)), RecordingJobs()
            )
        )
        await first_written.wait()
        assert len(tree(root)) == 1  # the temporary video
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert tree(root) == []

    async def test_failed_sidecar_rename_takes_the_video_back(
        self, connector: FolderConnector, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if str(dst).endswith(".json"):
                raise OSError(errno.EIO, "Input/output error")
            real_replace(src, dst)

        monkeypatch.setattr(folder_module.os, "replace", replace)

        with pytest.raises(Permanent, match="Input/output error"):
            await connector.publish(publish_request({"path": "out"}), RecordingJobs())

        assert tree(root) == []


class TestFileSystemErrors:
    async def test_disk_full_is_permanent_with_a_clear_detail(
        self, connector: FolderConnector, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def full(*_: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(folder_module, "_write_chunk", full)

        with pytest.raises(Permanent, match="disk holding folder 'out' is full"):
            await connector.publish(publish_request({"path": "out"}), RecordingJobs())

        assert tree(root) == []

    async def test_permission_denied_is_permanent_with_a_clear_detail(
        self, connector: FolderConnector, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def denied(*_: Any) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(folder_module, "_open_temp", denied)

        with pytest.raises(Permanent, match="permission denied"):
            await connector.publish(publish_request({"path": "out"}), RecordingJobs())

    async def test_a_file_in_the_way_of_the_folder_is_permanent(
        self, connector: FolderConnector, root: Path
    ) -> None:
        mkdirs(root)
        (root / "out").write_text("not a directory")

        with pytest.raises(Permanent, match="not a directory"):
            await connector.publish(publish_request({"path": "out"}), RecordingJobs())


class TestEscape:
    async def test_symlink_out_of_the_root_is_refused(
        self, connector: FolderConnector, root: Path, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        mkdirs(outside, root)
        (root / "out").symlink_to(outside)
        jobs = RecordingJobs()

        with pytest.raises(Permanent, match="outside the folder-target root"):
            await connector.publish(publish_request({"path": "out"}), jobs)

        assert list(outside.iterdir()) == []
        assert jobs.saved == []

    async def test_symlinked_parent_does_not_create_directories_outside(
        self, connector: FolderConnector, root: Path, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        mkdirs(outside, root)
        (root / "link").symlink_to(outside)

        with pytest.raises(Permanent, match="outside the folder-target root"):
            await connector.publish(publish_request({"path": "link/new/deeper"}), RecordingJobs())

        assert list(outside.iterdir()) == []

    @pytest.mark.parametrize("path", ["../escape", "/etc", "a/../../escape"])
    async def test_paths_climbing_out_are_refused(
        self, connector: FolderConnector, tmp_path: Path, path: str
    ) -> None:
        with pytest.raises(Permanent, match="outside the folder-target root"):
            await connector.publish(publish_request({"path": path}), RecordingJobs())

        assert not (tmp_path / "data" / "escape").exists()

    async def test_symlink_that_stays_inside_the_root_is_followed(
        self, connector: FolderConnector, root: Path
    ) -> None:
        mkdirs(root / "real")
        (root / "alias").symlink_to(root / "real")

        result = await connector.publish(publish_request({"path": "alias"}), RecordingJobs())

        assert (root / "real" / f"{STEM}.mp4").read_bytes() == VIDEO
        assert result.remote_url == (root / "real" / f"{STEM}.mp4").resolve().as_uri()


class TestReconcile:
    async def test_nothing_saved_means_not_posted(self, connector: FolderConnector) -> None:
        assert await connector.reconcile(publish_request({"path": "out"})) is None

    async def test_both_files_present_is_the_post(
        self, connector: FolderConnector, root: Path
    ) -> None:
        jobs = RecordingJobs()
        posted = await connector.publish(publish_request({"path": "out"}), jobs)

        found = await connector.reconcile(publish_request({"path": "out"}, job=jobs.saved[0]))

        assert found == posted

    async def test_neither_file_present_is_not_posted(
        self, connector: FolderConnector, root: Path
    ) -> None:
        job = {"path": str(root / "out" / f"{STEM}.mp4")}

        assert await connector.reconcile(publish_request({"path": "out"}, job=job)) is None

    async def test_video_without_sidecar_is_unknown(
        self, connector: FolderConnector, root: Path
    ) -> None:
        mkdirs(root / "out")
        video = root / "out" / f"{STEM}.mp4"
        video.write_bytes(VIDEO)

        found = await connector.reconcile(
            publish_request({"path": "out"}, job={"path": str(video)})
        )

        assert found == UNKNOWN

    async def test_sidecar_without_video_is_unknown(
        self, connector: FolderConnector, root: Path
    ) -> None:
        mkdirs(root / "out")
        (root / "out" / f"{STEM}.json").write_text("{}")
        job = {"path": str(root / "out" / f"{STEM}.mp4")}

        assert await connector.reconcile(publish_request({"path": "out"}, job=job)) == UNKNOWN
