"""A fake probe child, for tests of what happens when the real one crashes or hangs."""

from __future__ import annotations

import sys
from pathlib import Path

from uploadpools.media.probe import ProbeResult, ProbeWorker

# A child that speaks the protocol without PyAV. It acts on the requested file's name
# (or on its first argument, for every file): "crash*" kills itself with SIGSEGV,
# "hang*" never answers, "leave*" exits 0 without answering the first time (as an idle
# exit crossing a request would; the file "left" beside it marks that it did),
# "killonce*" SIGKILLs itself and "hangonce*" never answers, each only the first time it
# is asked about a file (a "<file>.tried" marker, beside the file or in the directory
# given as second argument, remembers it across children); anything else gets
# FAKE_RESULT.
FAKE_CHILD = r"""
import json, os, signal, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    path = json.loads(line)["path"]
    name = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else os.path.basename(path)
    marks = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(path)
    first_time = False
    if name.startswith(("killonce", "hangonce")):
        marker = os.path.join(marks, os.path.basename(path) + ".tried")
        first_time = not os.path.exists(marker)
        open(marker, "w").close()
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang") and (first_time or not name.startswith("hangonce")):
        time.sleep(3600)
    if name.startswith("killonce") and first_time:
        os.kill(os.getpid(), signal.SIGKILL)
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


def fake_worker(
    always: str | None = None, marks: Path | None = None, **kwargs: float
) -> ProbeWorker:
    """A worker over the fake child; ``always="crash"`` crashes on every file.

    ``marks``: where "killonce"/"hangonce" remember the files they failed on (default:
    beside each file)."""
    args = [always or ""] + ([str(marks)] if marks is not None else [])
    command = [sys.executable, "-c", FAKE_CHILD] + (args if always or marks else [])
    return ProbeWorker(command, **kwargs)
