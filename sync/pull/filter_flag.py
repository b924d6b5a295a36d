"""The account's filter flag (`GET /api/v4/account?with=is_api_filter_enabled`) remembered
between processes: one `sync_state` row (`amo.api_filter`) for the configured amoCRM base URL.

The daemon's polls keep the flag in their `PollMemo` for `ACCOUNT_INTERVAL_S` (an hour) and
rely on the answers meanwhile: a page that shows amoCRM ignored a filter turns the fallback walk
on at once, whatever the flag said (`sync.pull.memo`). An `amosync pull` is a process of its
own, so it read the flag on every run: one request of the rate budget's seven a second, 2.5 %
of a catch-up of 5,000 contacts (49 requests). Every run now stores what it read, and an
incremental run without a memo trusts a flag read less than `ACCOUNT_INTERVAL_S` ago by
this host's clock, as a daemon poll does. A full resync still reads it every time (as the
daemon's does): it is the run that must be right whatever any earlier run saw.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from sync.db.runs import RunStore
from sync.pull.memo import ACCOUNT_INTERVAL_S

FILTER_FLAG = "amo.api_filter"  # {"base_url", "enabled", "read_at": unix seconds}


def remembered(conn: Connection, runs: RunStore, base_url: str, now: float) -> bool | None:
    """The flag an earlier run read for `base_url` less than `ACCOUNT_INTERVAL_S` before `now`
    (unix seconds), or None (never read, another origin, too old, or from the future: a clock
    set back must not keep a flag for longer)."""
    value: dict[str, Any] = runs.get_state(conn, FILTER_FLAG) or {}
    enabled, read_at = value.get("enabled"), value.get("read_at")
    if value.get("base_url") != base_url or not isinstance(enabled, bool):
        return None
    if not isinstance(read_at, int | float) or isinstance(read_at, bool):
        return None
    if not 0 <= now - read_at < ACCOUNT_INTERVAL_S:
        return None
    return enabled


def keep(conn: Connection, runs: RunStore, base_url: str, enabled: bool, now: float) -> None:
    """Store the flag this run read (or the answers proved false) at `now` (unix seconds)."""
    runs.set_state(conn, FILTER_FLAG, {"base_url": base_url, "enabled": enabled, "read_at": now})
