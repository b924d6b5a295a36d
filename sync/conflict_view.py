"""Moved to `sync.push.conflict_view` (pure). This re-export stays only for sync/demo.py, which
another branch edits right now; the lead deletes it once demo.py imports
`sync.push.conflict_view`."""

from sync.push.conflict_view import render_conflicts

__all__ = ["render_conflicts"]
