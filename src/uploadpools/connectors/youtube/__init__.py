"""YouTube (Data API v3): Google OAuth, resumable upload, error mapping. See docs/platforms/youtube.md."""
