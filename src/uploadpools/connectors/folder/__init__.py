"""The `folder` target: write the video and a JSON sidecar into a directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from uploadpools.config import Settings


class FolderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Relative to UPLOADPOOLS_FOLDER_TARGETS_ROOT (default <data dir>/folders): a workspace
    # must not be able to make the server write anywhere it likes.
    path: str = Field(min_length=1, max_length=500)


def folder_target_root(settings: Settings) -> Path:
    """The directory every folder target lives in (absolute, not symlink-resolved)."""
    return Path(os.path.abspath(settings.folder_targets_root or settings.data_dir / "folders"))
