"""A fake probe child, for tests of what happens when the real one crashes or hangs."""

from __future__ import annotations

import sys

from uploadpools.media.probe import ProbeResult, ProbeWorker

# A child that speaks the protocol without PyAV. It acts on the requested file's name
# (or on its first argument, for every file): "crash*" kills itself with SIGSEGV,
# "hang*" never answers, "leave*" exits 0 without answering the first time (as an idle
# exit crossing a request would; the file "left" beside it marks that it did); anything
# else gets FAKE_RESULT.
FAKE_CHILD = r"""
import json, os, signal, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = json.loads(line)["path"]
    name = sys.argv[1] if len(sys.argv) > 1 else os.path.basename(path)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("leave"):
        marker = os.path.join(os.path.dirname(path), "left")
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(0)
    result = {"container": "mp4", "video_codec": "h264", "audio_codec": None,
              "duration_s": 1.0, "width": 2, "height": 2, "content_type": "video/mp4"}
    print(json.dumps({"result": result, "logs": [[30, "seen " + name]]}), flush=True)
"""
FAKE_RESULT = ProbeResult("mp4", "h264", None, 1.0, 2, 2, "video/mp4")


def fake_worker(always: str | None = None, **kwargs: float) -> ProbeWorker:
    """A worker over the fake child; ``always="crash"`` crashes on every file."""
    command = [sys.executable, "-c", FAKE_CHILD] + ([always] if always else [])
    return ProbeWorker(command, **kwargs)
