from __future__ import annotations

from pathlib import Path

import pytest

from media_samples import (
    make_audio_only,
    make_mp4,
    make_text_file,
    make_truncated_mp4,
    make_undecodable_mp4,
)
from uploadpools.media.avprobe import probe_file
from uploadpools.media.probe import NotAVideo, ProbeResult, probe


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe-samples")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "mp4": make_mp4(d / "clip.mp4", seconds=1.0, width=320, height=240, fps=10),
        "mp4_faststart": make_mp4(d / "fast.mp4", seconds=2.0, faststart=True),
        "silent": make_mp4(d / "silent.mp4", audio=False, width=160, height=96),
        "mov": make_mp4(d / "clip.mov", container_format="mov"),
        "mkv": make_mp4(d / "clip.mkv", container_format="matroska", seconds=3.0),
        "text": make_text_file(d / "notes.mp4"),
        "truncated": make_truncated_mp4(d / "cut.mp4"),
        "truncated_faststart": make_truncated_mp4(d / "cut-fast.mp4", faststart=True),
        "audio_only": make_audio_only(d / "voice.m4a"),
        "undecodable": make_undecodable_mp4(d / "zeros.mp4"),
        "empty": empty,
    }


class TestValidVideos:
    def test_mp4_fields(self, samples: dict[str, Path]) -> None:
        result = probe_file(samples["mp4"])

        assert result.container == "mp4"
        assert result.content_type == "video/mp4"
        assert result.video_codec == "h264"
        assert result.audio_codec == "aac"
        assert (result.width, result.height) == (320, 240)
        assert result.duration_s == pytest.approx(1.0, abs=0.1)

    def test_faststart_mp4_is_accepted(self, samples: dict[str, Path]) -> None:
        assert probe_file(samples["mp4_faststart"]).duration_s == pytest.approx(2.0, abs=0.1)

    def test_video_without_audio_has_no_audio_codec(self, samples: dict[str, Path]) -> None:
        result = probe_file(samples["silent"])

        assert result.audio_codec is None
        assert (result.width, result.height) == (160, 96)

    def test_quicktime_container_maps_to_quicktime_type(self, samples: dict[str, Path]) -> None:
        result = probe_file(samples["mov"])

        assert (result.container, result.content_type) == ("mov", "video/quicktime")

    def test_matroska_container_maps_to_matroska_type(self, samples: dict[str, Path]) -> None:
        result = probe_file(samples["mkv"])

        assert (result.container, result.content_type) == ("matroska", "video/x-matroska")
        assert result.duration_s == pytest.approx(3.0, abs=0.1)

    async def test_async_probe_matches_sync(self, samples: dict[str, Path]) -> None:
        result = await probe(samples["mp4"])

        assert isinstance(result, ProbeResult)
        assert result == probe_file(samples["mp4"])


class TestRejectedFiles:
    def test_text_file_is_not_a_video(self, samples: dict[str, Path]) -> None:
        with pytest.raises(NotAVideo, match=r"not a (recognised )?video file"):
            probe_file(samples["text"])

    def test_empty_file_is_rejected(self, samples: dict[str, Path]) -> None:
        with pytest.raises(NotAVideo, match="empty"):
            probe_file(samples["empty"])

    def test_missing_file_is_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(NotAVideo, match="does not exist"):
            probe_file(tmp_path / "nope.mp4")

    def test_audio_only_file_has_no_video_stream(self, samples: dict[str, Path]) -> None:
        with pytest.raises(NotAVideo, match="no video stream") as excinfo:
            probe_file(samples["audio_only"])

        assert "audio" in str(excinfo.value)

    def test_video_whose_frames_cannot_be_decoded_is_rejected(
        self, samples: dict[str, Path]
    ) -> None:
        with pytest.raises(NotAVideo, match="could not decode any frame of the h264 video"):
            probe_file(samples["undecodable"])

    def test_truncated_mp4_is_rejected(self, samples: dict[str, Path]) -> None:
        with pytest.raises(NotAVideo, match="truncated"):
            probe_file(samples["truncated"])

    def test_truncated_faststart_mp4_is_rejected(self, samples: dict[str, Path]) -> None:
        with pytest.raises(NotAVideo, match="truncated"):
            probe_file(samples["truncated_faststart"])

    def test_truncated_matroska_is_rejected(self, samples: dict[str, Path], tmp_path: Path) -> None:
        # Matroska has no box sizes to compare, so this exercises the
        # demux-the-tail check rather than the MP4 structure check.
        data = samples["mkv"].read_bytes()
        cut = tmp_path / "cut.mkv"
        cut.write_bytes(data[: len(data) // 2])

        with pytest.raises(NotAVideo, match="truncated"):
            probe_file(cut)

    def test_hls_playlist_is_not_opened(self, tmp_path: Path) -> None:
        playlist = tmp_path / "evil.m3u8"
        playlist.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
            "http://169.254.169.254/latest/meta-data\n#EXT-X-ENDLIST\n"
        )

        with pytest.raises(NotAVideo, match="HLS playlist"):
            probe_file(playlist)

    def test_text_without_video_extension_is_named_as_text(self, tmp_path: Path) -> None:
        with pytest.raises(NotAVideo, match="plain text"):
            probe_file(make_text_file(tmp_path / "notes.txt"))

    def test_random_bytes_are_rejected(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.mp4"
        junk.write_bytes(bytes(range(256)) * 64)

        with pytest.raises(NotAVideo):
            probe_file(junk)
