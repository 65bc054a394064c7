"""Upload Pools: post short videos from FIFO pools on a fixed rhythm."""

import sys

# httpx imports its command-line client (click, rich, pygments: ~4 MB in every process)
# whenever those happen to be installed, and typer installs rich. Nothing here uses that
# client; a None entry makes httpx's own `except ImportError` fallback take over.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
