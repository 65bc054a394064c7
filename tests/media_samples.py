"""Tiny, real media files generated with PyAV for the media-layer tests.

Everything here is synchronous and fast (small frames, low frame rates); call it
from fixtures, ideally module- or session-scoped ones.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path

import av

_AUDIO_RATE = 48_000
_AUDIO_FRAME_SAMPLES = 1024


def _fill_video_frame(frame: av.VideoFrame, index: int) -> None:
    """Paint a moving gradient so the encoder produces non-trivial packets."""
    for plane_no, plane in enumerate(frame.planes):
        stride = plane.line_size
        rows = plane.height
        if plane_no == 0:
            row = bytes((x * 3 + index * 7) & 0xFF for x in range(stride))
        else:
            row = bytes(((x + index) * 5 + plane_no * 64) & 0xFF for x in range(stride))
        plane.update(row * rows)


def _fill_audio_frame(frame: av.AudioFrame, first_sample: int) -> None:
    samples = [
        0.2 * math.sin(2 * math.pi * 440 * (first_sample + n) / _AUDIO_RATE)
        for n in range(frame.samples)
    ]
    data = struct.pack(f"<{len(samples)}f", *samples)
    for plane in frame.planes:
        plane.update(data)


def _mux_audio(container: av.container.OutputContainer, stream, seconds: float) -> None:
    total = int(seconds * _AUDIO_RATE)
    pts = 0
    while pts < total:
        frame = av.AudioFrame(format="fltp", layout="mono", samples=_AUDIO_FRAME_SAMPLES)
        frame.sample_rate = _AUDIO_RATE
        frame.pts = pts
        frame.time_base = Fraction(1, _AUDIO_RATE)
        _fill_audio_frame(frame, pts)
        container.mux(stream.encode(frame))
        pts += _AUDIO_FRAME_SAMPLES
    container.mux(stream.encode(None))


def make_mp4(
    path: Path,
    *,
    seconds: float = 1.0,
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    audio: bool = True,
    container_format: str = "mp4",
    faststart: bool = False,
) -> Path:
    """Write a real H.264 (+ AAC) file and return its path.

    ``container_format`` may be ``"mp4"``, ``"mov"`` or ``"matroska"``.  With
    ``faststart`` the ``moov`` index is written before the media data (as
    web-optimised MP4s are); by default it follows the data, which is what the
    mp4 muxer does on its own.
    """
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        audio_stream = None
        if audio:
            audio_stream = container.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        frame_count = max(1, round(seconds * fps))
        for index in range(frame_count):
            frame = av.VideoFrame(width, height, "yuv420p")
            _fill_video_frame(frame, index)
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio_stream is not None:
            _mux_audio(container, audio_stream, seconds)
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0) -> Path:
    """Write an AAC-in-MP4 (m4a-style) file that has no video stream."""
    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        _mux_audio(container, stream, seconds)
    return path


def make_truncated_mp4(path: Path, *, faststart: bool = False, seconds: float = 2.0) -> Path:
    """Write a valid MP4 and cut it to half its size.

    With the default layout (``moov`` after the media data) the cut removes the
    index entirely; with ``faststart`` the index survives but points at media
    data that is no longer there, which is the harder case for a prober.
    """
    path = Path(path)
    make_mp4(path, seconds=seconds, faststart=faststart)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_text_file(path: Path) -> Path:
    """Write a small plain-text file that merely carries a video-ish name."""
    path = Path(path)
    path.write_text("this is not a video\n" * 50, encoding="utf-8")
    return path


def make_undecodable_mp4(path: Path) -> Path:
    """Write a structurally intact MP4 whose media data is all zero bytes.

    The index (``moov``, placed first) still describes every sample, so the
    file opens and demuxes fine, but no frame can be decoded from it.
    """
    path = Path(path)
    make_mp4(path, seconds=1.0, faststart=True)
    data = bytearray(path.read_bytes())
    offset = 0
    while offset + 8 <= len(data):
        size, box_type = struct.unpack(">I4s", data[offset : offset + 8])
        if box_type == b"mdat":
            data[offset + 8 : offset + size] = bytes(size - 8)
            break
        offset += size
    else:
        raise AssertionError("no mdat box found")
    path.write_bytes(bytes(data))
    return path
