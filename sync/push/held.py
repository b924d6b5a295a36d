"""Creates whose answer was lost and that amoCRM's lists do not show yet: held, not resent, until
a bound covers the lag.

A create's answer can be lost two ways: a push killed (`kill -9`) after amoCRM applied its POST
but before it recorded the answer (the next push looks for it, `sync.push.posts`), or a 504, a
timeout or a cut connection after amoCRM applied it, inside a live run (the client looks for it
over the 10 s confirmation window, `AmoClient.create_contacts`). Either look is a list read
(`order[id]` above the floor, or `filter[created_at]`), and lists lag writes: about a second by
amocrm-api.md, but 15 s and more were seen (the audit's `dup_kill.py`), where the 10 s window
took "not shown" for "not made" and sent every create twice. No read avoids the lists: a new
contact's id is what the lost answer held, and amoCRM's ids are not ours to guess (they are
shared by every account). So a create not shown is sent again only once its send is
`RESEND_AFTER_S` old; until then its row stays `pending` and in `push_in_flight` with
`sync_error` saying so (`Held.message`), every push looks for it again (the daemon's interval
push: every 15 s), and the first look that shows it gives the row its id. A create amoCRM
cannot be searched for at all is not held but waits for a person (`waiting_message`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sync.db import inflight

RESEND_AFTER_S = 120.0  # a list lag this long is far beyond any seen: then "not shown" is believed


@dataclass(frozen=True)
class Held:
    """A create not shown by amoCRM, sent at `sent` (the time recorded in `push_in_flight`)."""

    sent: datetime

    @property
    def due(self) -> datetime:
        """When "still not shown" is believed and the create may be sent again."""
        return self.sent + timedelta(seconds=RESEND_AFTER_S)

    def message(self) -> str:
        """The row's `sync_error` while it is held."""
        return (f"sent at {self.sent:%Y-%m-%d %H:%M:%S} UTC; amoCRM's answer was lost (a 504, "
                "a timeout, a cut connection or a stopped push) and its lists do not show it "
                "yet (they lag writes): looked for again by every push, sent again only if "
                f"still not shown at {self.due:%H:%M:%S} UTC, so as not to create it "
                "twice")  # fmt: skip


def waiting_message(sent: datetime) -> str:
    """The row's `sync_error` while a create waits for a person (nothing can confirm it)."""
    return (f"waiting for confirmation since {sent:%Y-%m-%d %H:%M:%S} UTC: amoCRM could not "
            "be searched for it (order by id ignored, created_at filter not trusted), or shows "
            "new contacts of ours matching none of the creates (edited since?); not sent "
            "again, so as not to create it twice. DELETE this row to withdraw it: if amoCRM "
            "made it, the next pull brings it in")  # fmt: skip


def too_young_to_resend(
    now: datetime, entry: Mapping[str, Any], temps: Iterable[int]
) -> dict[int, Held]:
    """Of `temps` (in flight in `entry`, not shown by amoCRM), those sent less than
    `RESEND_AFTER_S` before `now`."""
    held = {temp: Held(inflight.sent_at(entry, temp)) for temp in temps}
    return {temp: hold for temp, hold in held.items() if hold.due > now}
