"""Pull: amoCRM contacts → PostgreSQL, incrementally or in full (see `sync.pull.run` and
docs/pull.md). What callers use:

    from sync.pull import run_pull, serve_request, PullReport, PullBusyError, Progress

Inside: `windows` (pure: spans, split, cursor arithmetic); the fetch stage in layers: `stage`
(state), `complete` (chat links and field definitions), `ties` (the newest page, seconds read by
id), `tail` (the final pass and tie checks), `fetch` (the loop and the windows); `sink` (the
database end and the one owner of the cursor); `events` (deletions and restores); `filters_off`
(the fallback walks); one run: `pipeline` (what both kinds share), `incremental`, `full`, `run`;
`readahead` (a bounded producer thread); `memo` (what the daemon's pulls remember between
polls, so an idle poll costs one request).
"""

from sync.pull.full import DELETE_FLOOR
from sync.pull.pipeline import PullReport
from sync.pull.run import PullBusyError, run_pull, serve_request
from sync.pull.sink import Progress

__all__ = ["DELETE_FLOOR", "Progress", "PullBusyError", "PullReport", "run_pull", "serve_request"]
