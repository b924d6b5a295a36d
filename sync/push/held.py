"""A dead run's creates amoCRM does not show yet: held, not resent, until a bound covers the lag.

A push killed (`kill -9`) after amoCRM applied its POST but before it recorded the answer leaves
the creates in flight; the next push looks for them (`sync.push.posts`). That look is a list read
(`order[id]` above the floor, or `filter[created_at]`), and lists lag writes: about a second by
amocrm-api.md, but 15 s and more were seen (the audit's `dup_kill.py`), where the 10 s
confirmation window took "not shown" for "not made" and sent every create twice. No read avoids
the lists: a new contact's id is what the lost answer held, and amoCRM's ids are not ours to guess
(they are shared by every account). So a create not shown is sent again only once its send is
`RESEND_AFTER_S` old; until then its row stays `pending` with `sync_error` saying so, every push
looks for it again (the daemon's interval push: every 15 s), and the first look that shows it
gives the row its id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sync.db import inflight

RESEND_AFTER_S = 120.0  # a list lag this long is far beyond any seen: then "not shown" is believed


def too_young_to_resend(
    now: datetime, entry: Mapping[str, Any], temps: Iterable[int]
) -> dict[int, datetime]:
    """Of `temps` (in flight in `entry`, not shown by amoCRM), those sent less than
    `RESEND_AFTER_S` before `now`, each with when it may be sent again."""
    bound = timedelta(seconds=RESEND_AFTER_S)
    due = {temp: inflight.sent_at(entry, temp) + bound for temp in temps}
    return {temp: at for temp, at in due.items() if at > now}


def held_message(sent: datetime, due: datetime) -> str:
    """The row's `sync_error` while it is held."""
    return (f"sent at {sent:%Y-%m-%d %H:%M:%S} UTC by a push that stopped before it recorded "
            "amoCRM's answer; amoCRM's lists do not show it yet (they lag writes): looked for "
            f"again by every push, sent again only if still not shown at {due:%H:%M:%S} UTC, "
            "so as not to create it twice")  # fmt: skip
