"""Moved to `sync.push.conflict_view` (pure). Kept only for modules other branches edit right now
(sync/demo.py); the lead removes it once they import `sync.push.conflict_view`
(test_module_size.py lists it)."""

from sync.push.conflict_view import render_conflicts

__all__ = ["render_conflicts"]
