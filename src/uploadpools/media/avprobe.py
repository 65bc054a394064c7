"""Decide whether a file is a usable video, and describe it, with PyAV/FFmpeg.

This module runs in the probe child process (``serve``, started by
``uploadpools.media.probe``), never imported by the server itself: FFmpeg's
libraries and the heap a probe grows stay out of the server. ``probe_file`` is
synchronous and CPU/disk bound; tests call it directly.

What "usable" means here:

* FFmpeg recognises the container (only a fixed set of ordinary video
  containers is accepted, and only the ``file`` protocol may be used, so a
  crafted playlist cannot make FFmpeg fetch URLs or other local files);
* there is a real video stream (cover art attached to an audio file does not
  count) with a non-zero frame size;
* the container or stream declares a positive, finite duration;
* the first video frame actually decodes;
* the file is not truncated (see ``_check_box_layout`` and ``_check_tail``).

The whole file is never decoded, so probing a 1 GB upload costs roughly the
first GOP's worth of decoding plus a few seconds' worth of demuxing at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import select
import signal
import struct
import sys
import threading
from pathlib import Path

import av
import av.logging
from av.container import InputContainer
from av.stream import Disposition

from uploadpools.media.probe import NotAVideo, ProbeResult

logger = logging.getLogger(__name__)

__all__ = ["probe_file", "serve"]

# Demuxers FFmpeg may use.  Anything else (playlists, concat lists, image
# sequences, raw bitstreams, ...) is refused before FFmpeg interprets it.
_ALLOWED_DEMUXERS = "mov,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf"
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": _ALLOWED_DEMUXERS}

# Bounds on the work done per probe.
_MAX_PACKETS_FOR_FIRST_FRAME = 300
_TAIL_WINDOW_S = 3.0
_MAX_TAIL_PACKETS = 20_000
_MAX_TAIL_BYTES = 256 * 1024 * 1024
_MAX_TOP_LEVEL_BOXES = 10_000

# How some of FFmpeg's demuxer names read to a person.
_FRIENDLY_FORMAT_NAMES = {
    "tty": "plain text",
    "hls": "an HLS playlist",
    "concat": "an FFmpeg concat list",
    "image2": "an image",
    "png_pipe": "a PNG image",
    "jpeg_pipe": "a JPEG image",
    "gif": "a GIF image",
    "mp3": "an MP3 audio file",
    "wav": "a WAV audio file",
}


_logging_configured = False
_logging_lock = threading.Lock()


def _configure_av_logging() -> None:
    """Route FFmpeg errors (only) through PyAV's logging hook.

    PyAV's default swallows every FFmpeg message, which also strips the detail
    from raised errors ("moov atom not found" becomes a bare "Invalid data").
    At ERROR level warnings stay silent, errors reach exception messages, and
    ``probe_file`` captures them per call.  An application that already chose
    a level (e.g. VERBOSE while debugging) is left alone.
    """
    global _logging_configured
    with _logging_lock:
        if _logging_configured:
            return
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
        _logging_configured = True


def _ffmpeg_detail(logs: list[tuple[int, str, str]]) -> str:
    errors = [msg.strip() for level, _name, msg in logs if level <= av.logging.ERROR]
    return f" (FFmpeg: {errors[-1]})" if errors else ""


def probe_file(path: Path) -> ProbeResult:
    """Inspect ``path`` and return its properties, or raise ``NotAVideo``."""
    _configure_av_logging()
    path = Path(path).resolve()
    try:
        file_size = path.stat().st_size
    except FileNotFoundError:
        raise NotAVideo("the file does not exist") from None
    if file_size == 0:
        raise NotAVideo("the file is empty")

    with av.logging.Capture() as logs:
        try:
            result = _probe(path, file_size, logs)
        except NotAVideo:
            raise
        except av.FFmpegError as exc:
            raise NotAVideo(f"the file could not be read as a video: {exc}") from exc
    for level, name, message in logs:
        # Only reached for files that passed; FFmpeg errors on those are worth
        # seeing, but they are not the uploader's problem.
        if level <= av.logging.ERROR:
            logger.warning("ffmpeg [%s] while probing %s: %s", name, path, message.strip())
    return result


def _probe(path: Path, file_size: int, logs: list[tuple[int, str, str]]) -> ProbeResult:
    # Cheap structural check first: for a cut MP4 it gives a far clearer reason
    # than FFmpeg's "moov atom not found".
    _check_box_layout(path, file_size)

    # Two openings: the tail is demuxed after the first one (and its decoder, frames and
    # the packets read for the first frame, ~7 MB for a 720p frame) is gone, so the two
    # steps' memory does not add up at the probe child's peak.
    result, video_index = _describe(path, logs)
    with _open(path, logs) as container:
        _check_tail(container, container.streams[video_index], result.duration_s, file_size, logs)
    return result


def _open(path: Path, logs: list[tuple[int, str, str]]) -> InputContainer:
    try:
        return av.open(str(path), mode="r", options=_OPEN_OPTIONS)
    except av.FFmpegError as exc:
        raise NotAVideo(_open_failure_reason(logs)) from exc


def _describe(path: Path, logs: list[tuple[int, str, str]]) -> tuple[ProbeResult, int]:
    """The video's properties, once its first frame decoded; and the video stream's index."""
    with _open(path, logs) as container:
        video = _pick_video_stream(container)
        codec_ctx = video.codec_context
        width, height = int(codec_ctx.width or 0), int(codec_ctx.height or 0)
        if width <= 0 or height <= 0:
            raise NotAVideo("the video stream has no frame size (width/height unknown)")
        video_codec = codec_ctx.name or video.codec.name
        audio_codec = next((s.codec_context.name for s in container.streams.audio), None)

        duration_s = _declared_duration(container, video)
        if duration_s is None:
            raise NotAVideo("the video's duration is zero or unknown")

        _decode_first_frame(container, video, video_codec, logs)
        short_name, content_type = _container_identity(container, path)
        result = ProbeResult(
            container=short_name,
            video_codec=video_codec,
            audio_codec=audio_codec,
            duration_s=duration_s,
            width=width,
            height=height,
            content_type=content_type,
        )
        return result, video.index


def _open_failure_reason(logs: list[tuple[int, str, str]]) -> str:
    for level, name, message in reversed(logs):
        if level <= av.logging.ERROR and message.startswith("Format not on whitelist"):
            detected = _FRIENDLY_FORMAT_NAMES.get(name, f"{name!r} data")
            return f"this is not a video file: it looks like {detected}, not a video container"
    return f"this is not a recognised video file{_ffmpeg_detail(logs)}"


def _pick_video_stream(container: InputContainer):
    candidates = [
        s for s in container.streams.video if not (s.disposition & Disposition.attached_pic)
    ]
    if not candidates:
        kinds = sorted({s.type for s in container.streams})
        found = ", ".join(kinds) if kinds else "no streams at all"
        raise NotAVideo(f"the file has no video stream (found: {found})")
    # The largest picture wins; ties keep FFmpeg's order.
    return max(
        candidates, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0)
    )


def _declared_duration(container: InputContainer, video) -> float | None:
    candidates: list[float] = []
    if container.duration is not None and container.duration > 0:
        candidates.append(container.duration / av.time_base)
    if video.duration is not None and video.time_base is not None and video.duration > 0:
        candidates.append(float(video.duration * video.time_base))
    for value in candidates:
        if math.isfinite(value) and value > 0:
            return value
    return None


def _decode_first_frame(
    container: InputContainer, video, video_codec: str, logs: list[tuple[int, str, str]]
) -> None:
    """Decode packets from the start until one frame comes out (bounded)."""
    codec_ctx = video.codec_context
    try:
        packets = 0
        for packet in container.demux(video):
            if packet.size == 0:
                continue  # PyAV's end-of-stream marker
            if codec_ctx.decode(packet):
                return
            packets += 1
            if packets >= _MAX_PACKETS_FOR_FIRST_FRAME:
                break
        # Short clips or deep reordering: drain the decoder once.
        if codec_ctx.decode(None):
            return
    except av.FFmpegError as exc:
        raise NotAVideo(
            f"could not decode any frame of the {video_codec} video stream"
            f"{_ffmpeg_detail(logs) or f' ({exc})'}"
        ) from exc
    raise NotAVideo(
        f"could not decode any frame of the {video_codec} video stream{_ffmpeg_detail(logs)}"
    )


def _check_box_layout(path: Path, file_size: int) -> None:
    """Truncation check for MP4/MOV (ISO base media) files.

    An ISO-BMFF file is a sequence of top-level boxes, each starting with its
    own length.  Walking those headers costs a handful of tiny reads, however
    large the file is, and catches both ways a cut MP4 looks:

    * ``moov`` after ``mdat`` (the muxer default): the index is gone and
      ``mdat`` claims more bytes than remain;
    * ``moov`` first ("faststart"): the index survives, but ``mdat`` still
      claims more bytes than remain, so samples would be read past EOF.

    Files that do not start like ISO-BMFF are left to FFmpeg.
    """
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
            return
        offset = 0
        for _ in range(_MAX_TOP_LEVEL_BOXES):
            if offset == file_size:
                return
            fh.seek(offset)
            header = fh.read(16)
            if len(header) < 8:
                # A few stray bytes after the last box: harmless padding.  (If
                # a needed box were missing, FFmpeg would say so.)
                return
            size, box_type = struct.unpack(">I4s", header[:8])
            if not all(0x20 <= b < 0x7F for b in box_type):
                # Not a plausible box type: stop walking and let FFmpeg judge.
                return
            name = box_type.decode("ascii")
            if size == 1:  # 64-bit "largesize" follows the type
                if len(header) < 16:
                    raise NotAVideo("the file is truncated inside a box header")
                size = struct.unpack(">Q", header[8:16])[0]
                if size < 16:
                    raise NotAVideo(f"the file is corrupt: box {name!r} has an invalid size")
            elif size == 0:  # "extends to the end of the file"
                return
            elif size < 8:
                raise NotAVideo(f"the file is corrupt: box {name!r} has an invalid size")
            if offset + size > file_size:
                raise NotAVideo(
                    f"the file is truncated: its {name!r} box needs {offset + size} bytes "
                    f"but the file has only {file_size}"
                )
            offset += size


def _check_tail(
    container: InputContainer,
    video,
    duration_s: float,
    file_size: int,
    logs: list[tuple[int, str, str]],
) -> None:
    """Truncation check for every container: are the last seconds there?

    Seek (on the video stream, to any frame, not just a keyframe) to a few
    seconds before the declared end and demux, without decoding, through to
    EOF.  A complete file yields packets whose end time reaches the declared
    duration; a cut file stops early (FFmpeg logs "partial file" and reports
    EOF) or yields corrupt packets.  Work is bounded by a packet and byte
    budget: if seeking did not bring us close to the end (some formats cannot
    seek precisely) the budget runs out before EOF and the check is skipped
    rather than reading a huge file end to end.
    """
    start_s = (container.start_time or 0) / av.time_base
    target_s = max(0.0, duration_s - _TAIL_WINDOW_S)
    if target_s > 0 and video.time_base is not None:
        try:
            video_start = video.start_time or 0
            container.seek(
                video_start + int(target_s / video.time_base),
                stream=video,
                backward=True,
                any_frame=True,
            )
        except av.FFmpegError:
            logger.debug("seek failed while probing; demuxing from the current position")

    last_end_s: float | None = None
    packets = 0
    data_bytes = 0
    for packet in container.demux():
        if packet.size == 0:
            continue  # end-of-stream marker
        if packet.is_corrupt:
            raise NotAVideo(
                f"the file is truncated or corrupt: damaged data near the end{_ffmpeg_detail(logs)}"
            )
        if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > file_size:
            raise NotAVideo("the file is truncated: media data runs past the end of the file")
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and packet.time_base is not None:
            end = float((ts + (packet.duration or 0)) * packet.time_base) - start_s
            last_end_s = end if last_end_s is None else max(last_end_s, end)
        packets += 1
        data_bytes += packet.size
        if packets >= _MAX_TAIL_PACKETS or data_bytes >= _MAX_TAIL_BYTES:
            logger.debug("tail check budget exhausted; truncation not verified")
            return

    # Generous, because some containers only estimate their duration; a
    # truncated MP4/MOV is caught exactly by the box check anyway.
    tolerance = max(0.5, 0.05 * duration_s)
    if last_end_s is None:
        raise NotAVideo(
            f"the file is truncated: no media data could be read near its declared end "
            f"({duration_s:.1f} s){_ffmpeg_detail(logs)}"
        )
    if last_end_s < duration_s - tolerance:
        raise NotAVideo(
            f"the file is truncated: media data stops at {max(0.0, last_end_s):.1f} s "
            f"but the file declares {duration_s:.1f} s{_ffmpeg_detail(logs)}"
        )


def _container_identity(container: InputContainer, path: Path) -> tuple[str, str]:
    names = container.format.name.split(",")
    if "mov" in names or "mp4" in names:
        brand = container.metadata.get("major_brand", "").strip().lower()
        if brand == "qt":
            return "mov", "video/quicktime"
        return "mp4", "video/mp4"
    if "matroska" in names or "webm" in names:
        if _ebml_doctype(path) == "webm":
            return "webm", "video/webm"
        return "matroska", "video/x-matroska"
    return names[0], "application/octet-stream"


def _ebml_doctype(path: Path) -> str | None:
    """Read the DocType ("webm" or "matroska") from an EBML header.

    FFmpeg uses one demuxer for both and does not report which one it saw.
    """
    with path.open("rb") as fh:
        head = fh.read(128)
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    at = head.find(b"\x42\x82")
    if at < 0 or at + 3 > len(head):
        return None
    first = head[at + 2]
    length_bytes = 9 - first.bit_length() if first else 0
    if not 1 <= length_bytes <= 8 or at + 2 + length_bytes > len(head):
        return None
    size = first & ((1 << (8 - length_bytes)) - 1)
    for b in head[at + 3 : at + 2 + length_bytes]:
        size = (size << 8) | b
    value = head[at + 2 + length_bytes : at + 2 + length_bytes + size]
    return value.decode("ascii", "replace").rstrip("\x00") or None


# -- the probe child ------------------------------------------------------------------------


class _Collect(logging.Handler):
    """Keeps this module's log records of one probe, to be logged by the server."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def serve() -> None:
    """The probe child's loop: ``python -c "...; serve()" IDLE_EXIT_S LOG_LEVEL MAX_PROBES``.

    Reads one JSON request per line on stdin (``{"path": ...}``) and answers one JSON
    line each: ``{"result": {...}}``, ``{"refused": reason}`` (not a usable video) or
    ``{"error": ...}`` (a bug), plus the log records of that probe. The first line out
    is ``{"ready": true}``, once PyAV is imported. Exits with status 0 when stdin
    closes (the server went away), after IDLE_EXIT_S seconds without a request, or
    after its MAX_PROBES-th answer (marked ``"last": true``), so that the heap FFmpeg
    fragments over many probes is given back; ``uploadpools.media.probe`` relies on
    that status to tell a planned exit from a crash.
    """
    idle_exit_s = float(sys.argv[1])
    level = int(sys.argv[2]) if len(sys.argv) > 2 else logging.WARNING
    max_probes = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # 0: no limit
    # The server decides when this child ends: its stdin closes when the server exits.
    # Ctrl-C in a terminal and systemd's stop (SIGTERM to the whole control group) reach
    # this child too; dying of them mid-probe would read as FFmpeg crashing on the file
    # (refused, or a fetched video skipped) while the server shuts down gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers get a descriptor of their own; anything else writing to stdout (a stray
    # print, a C library) goes to stderr instead of corrupting them.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    requests = sys.stdin.fileno()
    collect = _Collect(level)
    logger.addHandler(collect)
    logger.setLevel(level)
    logger.propagate = False
    _configure_av_logging()

    def answer(message: dict[str, object]) -> None:
        answers.write(json.dumps(message).encode() + b"\n")

    answer({"ready": True})
    pending = b""
    probes = 0
    while True:
        while b"\n" not in pending:
            readable, _, _ = select.select([requests], [], [], idle_exit_s)
            if not readable:
                return  # idle
            chunk = os.read(requests, 65536)
            if not chunk:
                return  # the server closed our stdin
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        collect.records.clear()
        try:
            path = Path(json.loads(line)["path"])
            message: dict[str, object] = {"result": dataclasses.asdict(probe_file(path))}
        except NotAVideo as exc:
            message = {"refused": exc.reason}
        except Exception as exc:
            message = {"error": f"{type(exc).__name__}: {exc}"}
        message["logs"] = collect.records
        probes += 1
        if probes == max_probes:
            message["last"] = True
        answer(message)
        if message.get("last"):
            return
