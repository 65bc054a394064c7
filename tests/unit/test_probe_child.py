"""The probe child: same verdicts as probing in-process, and its failures are errors.

Fake children (``probehelpers``) stand in for FFmpeg crashing or hanging on a file; the
real child (``child_command()``) gives the verdicts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from media_samples import make_mp4, make_text_file, make_truncated_mp4
from probehelpers import FAKE_RESULT, fake_worker
from uploadpools.media import probe as probe_module
from uploadpools.media.avprobe import probe_file
from uploadpools.media.probe import (
    NotAVideo,
    ProbeUnavailable,
    ProbeWorker,
    child_command,
)
from uploadpools.media.service import store_probed
from uploadpools.media.storage import LocalStorage


def without_detail(reason: str) -> str:
    return reason.split(" (FFmpeg: ")[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe-child-samples")
    return {
        "mp4": make_mp4(d / "clip.mp4", seconds=1.0, width=320, height=240, fps=10),
        "mkv": make_mp4(d / "clip.mkv", container_format="matroska", seconds=2.0),
        "text": make_text_file(d / "notes.mp4"),
        "truncated": make_truncated_mp4(d / "cut.mp4"),
    }


@pytest.fixture(scope="module")
def child() -> ProbeWorker:
    worker = ProbeWorker(child_command())
    yield worker
    worker.close()


class TestVerdictsMatchInProcess:
    @pytest.mark.parametrize("name", ["mp4", "mkv"])
    def test_video_is_described_the_same(
        self, child: ProbeWorker, samples: dict[str, Path], name: str
    ) -> None:
        assert child.probe(samples[name]) == probe_file(samples[name])

    @pytest.mark.parametrize("name", ["text", "truncated"])
    def test_refusal_gives_the_same_reason(
        self, child: ProbeWorker, samples: dict[str, Path], name: str
    ) -> None:
        with pytest.raises(NotAVideo) as in_process:
            probe_file(samples[name])
        with pytest.raises(NotAVideo) as in_child:
            child.probe(samples[name])

        # PyAV drops an FFmpeg message that repeats the previous one, so the
        # "(FFmpeg: ...)" detail depends on what the process probed before.
        assert without_detail(in_child.value.reason) == without_detail(in_process.value.reason)

    def test_one_child_serves_many_probes(
        self, child: ProbeWorker, samples: dict[str, Path]
    ) -> None:
        child.probe(samples["mp4"])
        pid, started = child.pid, child.started
        with pytest.raises(NotAVideo):
            child.probe(samples["text"])
        child.probe(samples["mkv"])

        assert (child.pid, child.started) == (pid, started)

    def test_child_is_replaced_after_its_last_probe(self, samples: dict[str, Path]) -> None:
        worker = ProbeWorker(child_command(max_probes=2))
        try:
            results = [worker.probe(samples["mp4"]) for _ in range(3)]
            with pytest.raises(NotAVideo):
                worker.probe(samples["text"])
        finally:
            worker.close()

        assert results == [probe_file(samples["mp4"])] * 3
        assert worker.started == 2

    def test_child_outlives_a_sigterm_meant_for_the_server(
        self, child: ProbeWorker, samples: dict[str, Path]
    ) -> None:
        child.probe(samples["mp4"])
        pid = child.pid
        assert pid is not None

        os.kill(pid, signal.SIGTERM)

        assert child.probe(samples["mkv"]) == probe_file(samples["mkv"])
        assert child.pid == pid

    async def test_async_probe_uses_the_child(self, samples: dict[str, Path]) -> None:
        result = await probe_module.probe(samples["mp4"])

        assert dataclasses.asdict(result) == dataclasses.asdict(probe_file(samples["mp4"]))
        assert probe_module.default_worker().pid is not None

    def test_the_server_process_does_not_import_pyav(self) -> None:
        import subprocess

        code = (
            "import sys, uploadpools.app, uploadpools.media.probe; "
            "sys.exit(1 if 'av' in sys.modules else 0)"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class TestChildFailures:
    def test_child_crashing_on_a_file_twice_refuses_it_and_the_next_probe_gets_a_new_child(
        self, tmp_path: Path
    ) -> None:
        worker = fake_worker()
        try:
            with pytest.raises(NotAVideo, match=r"checker crashed \(SIGSEGV\) while reading"):
                worker.probe(tmp_path / "crash.mp4")
            assert worker.started == 2  # tried once more in a fresh child

            assert worker.probe(tmp_path / "fine.mp4") == FAKE_RESULT
            assert worker.started == 3
        finally:
            worker.close()

    def test_child_killed_during_a_probe_is_retried_in_a_fresh_child(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        worker = fake_worker()
        try:
            with caplog.at_level(logging.WARNING, logger="uploadpools.media.probe"):
                assert worker.probe(tmp_path / "killonce.mp4") == FAKE_RESULT
        finally:
            worker.close()

        assert worker.started == 2
        assert "checker crashed (SIGKILL)" in caplog.text
        assert "trying it once more" in caplog.text

    def test_child_killed_from_outside_mid_probe_is_retried(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        # As the OOM killer would: the child is busy with the file when it is killed.
        worker = fake_worker(timeout_s=60)
        probing = tmp_path / "hangonce.mp4"
        marker = tmp_path / "hangonce.mp4.tried"
        stop = threading.Event()

        def kill_when_busy() -> None:
            while not stop.is_set():
                pid = worker.pid
                if pid is not None and marker.exists():
                    os.kill(pid, signal.SIGKILL)
                    return
                stop.wait(0.01)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        try:
            with caplog.at_level(logging.WARNING, logger="uploadpools.media.probe"):
                result = worker.probe(probing)
        finally:
            stop.set()
            killer.join()
            worker.close()

        assert result == FAKE_RESULT
        assert worker.started == 2
        assert "checker crashed (SIGKILL)" in caplog.text

    def test_probe_timing_out_once_is_retried_in_a_fresh_child(self, tmp_path: Path) -> None:
        worker = fake_worker(timeout_s=0.3)
        try:
            assert worker.probe(tmp_path / "hangonce.mp4") == FAKE_RESULT
        finally:
            worker.close()

        assert worker.started == 2

    def test_hanging_child_times_out_twice_and_is_killed(self, tmp_path: Path) -> None:
        worker = fake_worker(timeout_s=0.3)
        try:
            worker.probe(tmp_path / "fine.mp4")
            pid = worker.pid
            assert pid is not None

            with pytest.raises(NotAVideo, match=r"checking the video took longer than 0.3 s"):
                worker.probe(tmp_path / "hang.mp4")

            assert not alive(pid)
            assert worker.started == 2  # the retry had a fresh child
            assert worker.probe(tmp_path / "fine.mp4") == FAKE_RESULT
            assert worker.started == 3
        finally:
            worker.close()

    def test_idle_exit_crossing_a_request_is_not_taken_for_a_crash(self, tmp_path: Path) -> None:
        worker = fake_worker()
        try:
            assert worker.probe(tmp_path / "leave.mp4") == FAKE_RESULT
            assert worker.started == 2
        finally:
            worker.close()

    def test_child_that_cannot_start_is_a_server_error(self, tmp_path: Path) -> None:
        worker = ProbeWorker([sys.executable, "-c", "import sys; sys.exit(3)"])

        with pytest.raises(ProbeUnavailable, match="exited with status 3"):
            worker.probe(tmp_path / "fine.mp4")

    def test_child_that_never_says_ready_is_a_server_error(self, tmp_path: Path) -> None:
        worker = ProbeWorker(
            [sys.executable, "-c", "import time; time.sleep(3600)"], start_timeout_s=0.3
        )

        with pytest.raises(ProbeUnavailable, match="did not start in time"):
            worker.probe(tmp_path / "fine.mp4")
        assert worker.pid is None

    def test_child_log_records_are_logged_by_the_server(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        worker = fake_worker()
        try:
            with caplog.at_level(logging.WARNING, logger="uploadpools.media.avprobe"):
                worker.probe(tmp_path / "fine.mp4")
        finally:
            worker.close()

        assert [(r.name, r.getMessage()) for r in caplog.records] == [
            ("uploadpools.media.avprobe", "seen fine.mp4")
        ]

    def test_closed_worker_leaves_no_child(self, tmp_path: Path) -> None:
        worker = fake_worker()
        worker.probe(tmp_path / "fine.mp4")
        pid = worker.pid
        assert pid is not None

        worker.close()

        assert worker.pid is None
        assert not alive(pid)


class TestNothingKept:
    async def test_crash_refuses_the_stored_file_and_deletes_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = LocalStorage(tmp_path / "media")

        async def chunks():
            yield b"\x00" * 100

        stored = await storage.put_stream("ws/ab/crash-me", chunks(), max_bytes=1000)
        worker = fake_worker()
        monkeypatch.setattr(probe_module, "_default", worker)
        try:
            with pytest.raises(NotAVideo, match="crashed"):
                await store_probed(storage, stored)
        finally:
            worker.close()

        assert not await storage.exists(stored.key)


class TestHeapGivenBackBeforeLargeProbes:
    """A large transfer's freed buffers are returned to the system before the probe child
    (at its own peak for a large file) runs; small videos do not pay for it."""

    async def _probe_counting_trims(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int
    ) -> int:
        from uploadpools.kit import memory
        from uploadpools.media import service

        calls = []
        monkeypatch.setattr(service, "GIVE_BACK_AFTER_BYTES", threshold)
        monkeypatch.setattr(
            memory, "give_back_freed_heap", lambda: calls.append(1) or memory._glibc() is not None
        )
        storage = LocalStorage(tmp_path / "media")
        data = make_mp4(tmp_path / "v.mp4").read_bytes()

        async def chunks():
            yield data

        stored = await storage.put_stream("ws/ab/v", chunks(), max_bytes=len(data))
        assert (await store_probed(storage, stored)).video_codec == "h264"
        return len(calls)

    async def test_at_the_threshold(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert await self._probe_counting_trims(tmp_path, monkeypatch, threshold=1) == 1

    async def test_not_below_it(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert await self._probe_counting_trims(tmp_path, monkeypatch, threshold=1 << 40) == 0


def test_give_back_freed_heap_returns_freed_pages_on_glibc() -> None:
    from uploadpools.kit import memory

    if memory._glibc() is None:
        pytest.skip("not glibc")
    blocks = [bytearray(100_000) for _ in range(400)]  # below the mmap threshold: heap
    del blocks[:-1]  # freed, and the last one keeps the heap's top in place
    assert memory.give_back_freed_heap() is True
