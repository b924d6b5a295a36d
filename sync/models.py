"""Moved to `sync.core.models` (pure). This re-export stays only for sync/demo.py, which another
branch edits right now; the lead deletes it once demo.py imports `sync.core.models`."""

from sync.core.models import *  # noqa: F403
