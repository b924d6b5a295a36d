"""Pull: amoCRM contacts → PostgreSQL, incrementally or in full (see `sync.pull.run` and
docs/pull.md). What callers use:

    from sync.pull import run_pull, serve_request, PullReport, PullBusyError, Progress

Inside: `windows` (pure: spans, split, cursor arithmetic), `fetch` (the fetch stage: windows
walked in parallel, ties, chats, field definitions), `sink` (the database end and the one owner
of the cursor), `events` (deletions and restores), `filters_off` (the fallback walks), `run`
(one run), `readahead` (a bounded producer thread), `memo` (what the daemon's pulls remember
between polls, so an idle poll costs one request).
"""

from sync.pull.run import DELETE_FLOOR, PullBusyError, PullReport, run_pull, serve_request
from sync.pull.sink import Progress

__all__ = ["DELETE_FLOOR", "Progress", "PullBusyError", "PullReport", "run_pull", "serve_request"]
