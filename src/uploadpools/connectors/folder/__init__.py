"""The `folder` target: write the video and a JSON sidecar into a directory."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FolderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Relative to UPLOADPOOLS_FOLDER_TARGETS_ROOT (default <data dir>/folders): a workspace
    # must not be able to make the server write anywhere it likes.
    path: str = Field(min_length=1, max_length=500)
