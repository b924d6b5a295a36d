"""Push, the use case that sends local edits to amoCRM: `run` (one run under its lock) drives
`updates` (outbox → current versions → `conflicts`' three-way merge → `plan` → PATCH on the
`pool`) and `posts` (recovery of a dead run's POSTs, creates, chat links); `fresh` reads
amoCRM's current versions, `report` counts, `conflict_view` shows conflicts as text."""

from sync.push.report import PushReport
from sync.push.run import run_push

__all__ = ["PushReport", "run_push"]
