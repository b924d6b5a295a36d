"""What the daemon's pulls remember from poll to poll, so that an idle poll costs one request.

An idle poll is one whose walk stores no new contact version. Its contacts page is rarely empty:
every poll re-reads the `sync.overlap_s` before the cursor, so it lists at least the newest
contact again, a version already stored. Such a poll sends only that `GET /api/v4/contacts`:

- **chat links** are read only for contacts whose listed version is not stored yet (every
  incremental pull, `amosync pull` too; a full resync reads them all);
- **the account's filter flag** (`GET /api/v4/account?with=is_api_filter_enabled`) is remembered
  and read again after `ACCOUNT_INTERVAL_S`; a page that shows amoCRM ignored the filter turns the
  descending walk on at once, whatever the flag said;
- **deletion events** (`GET /api/v4/events`, `contact_deleted` / `contact_restored`) are read by
  an idle poll only once `sync.events_interval_s` has passed since the last read (less 10 %: the
  read began a moment into its poll, and the poll an interval later must still count); unset (the
  default) it is 3 x `sync.poll_interval_s`, at most 300 s (`SyncConfig.events_every_s`), so a
  short poll interval sees deletions within a few polls. A deletion does not change any contact's
  `updated_at`, so only the events show it: a contact deleted in amoCRM is marked `is_deleted`
  within that interval + `poll_interval_s` (plus a run's own time).
  The events cursor does not move while they are not read, so the read that comes next starts
  where the last one ended and misses nothing. A poll that stores a new version reads them
  always, and so does the walk of accounts whose filters amoCRM ignores (it needs them to place
  its cursor);
- a **204 on the first page** (nothing at all since the cursor) is not asked again: the cursor
  stays, and the next poll asks anyway.

`amosync pull` runs without a memo: each run reads the account flag and the events, and asks
again after a first 204. The memo lives in the daemon's process (a new leader starts afresh and
reads everything on its first poll).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

ACCOUNT_INTERVAL_S = 3600.0
EARLY_FRACTION = 0.1  # events are due this share of their interval early (see `events_due`)


@dataclass
class PollMemo:
    """The daemon's memory between its pulls (one pull runs at a time: no lock needed)."""

    events_interval_s: float
    account_interval_s: float = ACCOUNT_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    filters: bool | None = None  # the account's is_api_filter_enabled, as last read
    filters_read: float | None = None
    events_read: float | None = None  # when the last events read began

    def cached_filters(self) -> bool | None:
        """The remembered filter flag, unless it is older than `account_interval_s`."""
        if self.filters_read is None or self._since(self.filters_read) >= self.account_interval_s:
            return None
        return self.filters

    def remember_filters(self, enabled: bool) -> None:
        self.filters, self.filters_read = enabled, self.clock()

    def events_due(self) -> bool:
        """May an idle poll skip the events? Not once `events_interval_s` has nearly passed:
        the last read began a moment into its poll (after the contacts page), so the poll that
        starts `events_interval_s` after that poll would otherwise find a little less and wait
        one more poll (every fourth poll instead of every third)."""
        if self.events_read is None:
            return True
        return self._since(self.events_read) >= self.events_interval_s * (1 - EARLY_FRACTION)

    def now(self) -> float:
        return self.clock()

    def events_done(self, began: float) -> None:
        self.events_read = began

    def events_soon(self) -> None:
        """Have the next poll read the events, idle or not (something hints at a deletion)."""
        self.events_read = None

    def _since(self, moment: float) -> float:
        return self.clock() - moment
