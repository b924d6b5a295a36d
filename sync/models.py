"""Moved to `sync.core.models` (pure). Kept only for modules other branches edit right now
(sync/demo.py); the lead removes it once they import `sync.core.models` (test_module_size.py
lists it)."""

from sync.core.models import *  # noqa: F403
