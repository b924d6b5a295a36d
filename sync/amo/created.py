"""A lost create's look-up when amoCRM ignores `order[id]`: the contacts created while it was
sent, read with `filter[created_at][from|to]` (amocrm-api.md §3), trusted only once checked.

amoCRM's filters may be silently ignored (its filtering is "alpha": §3, §11.2), and the answer is
then the unfiltered list. A read is trusted only when

- every contact it lists was created inside the range asked for: an ignored (or half-honoured)
  filter shows contacts outside it; an account whose contacts all fall inside it gives the whole
  list, which is the right answer too;
- every answer's `Date` header puts amoCRM's clock within `SLACK_S` of ours: the range is our
  clock's, widened by `SLACK_S` at both ends, so a clock further off could leave the contact out
  (no `Date` at all: nothing to check it by, not trusted);
- it ended within `MAX_PAGES` pages;
- it did not end on a 204 it cannot believe: amoCRM answers 204 now and then for a list that is
  not empty (amocrm-api.md §2), and an empty answer would make a create that amoCRM did make
  look "not made" (the caller would resend it: a duplicate). A page that lists nothing is asked
  again (`ASKS` times in all, `reconcile_settle_s` apart: `Reasker`); one that still does is
  believed only after a full page that announced no more (the end of a server that never sends
  `next`), never on page 1: "nothing was made" cannot be told from a spurious 204 there.

Otherwise `InvariantError`, and the caller sends nothing again (the create waits for a person).
The range runs from the first send less `SLACK_S` to the last send plus the confirmation window
plus `SLACK_S` (a create shows within the window, so amoCRM made it by then), and never past now
plus `SLACK_S`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync.amo.backoff import pause
from sync.amo.numbers import as_int
from sync.amo.pages import Fetch, Page, date_of, iter_pages, listed
from sync.amo.session import Reply
from sync.clock import Clock
from sync.errors import InvariantError
from sync.logs import get_logger

if TYPE_CHECKING:
    from sync.amo.client import AmoClient

log = get_logger("sync.amo.created")

CONTACTS = "/api/v4/contacts"
SLACK_S = 60  # how far amoCRM's clock may be from ours; each answer's `Date` checks it
MAX_PAGES = 20  # 5,000 contacts created around the send: beyond that, give up loudly
IGNORED = "cannot reconcile a lost create: amoCRM ignores order[id] and filter[created_at]"
ASKS = 3  # a look-up page that lists nothing is asked this often in all before it is believed


class EmptyAnswerError(InvariantError):
    """A lost create's look-up kept answering 204 (or an empty page) where it cannot be trusted:
    a create amoCRM did make would look "not made"; the caller resends nothing."""


@dataclass(frozen=True)
class Sent:
    """When the creates looked for were sent, on our clock: the first send and the last (None:
    this call is still sending them)."""

    first: datetime
    last: datetime | None = None


def created_between(client: AmoClient, sent: Sent, window_s: float) -> list[dict[str, Any]]:
    """The contacts amoCRM made around `sent` (see the module docstring), or `InvariantError`
    when the read cannot be trusted."""
    clock = client.session.clock
    now = clock.now()
    last = now if sent.last is None else min(now, sent.last + timedelta(seconds=window_s))
    low = math.floor(sent.first.timestamp()) - SLACK_S
    high = math.ceil(last.timestamp()) + SLACK_S
    dates = _Dates(clock, client.get)
    asking = Reasker(client, dates.fetch)
    params = {"filter": {"created_at": {"from": low, "to": high}}}
    found: dict[int, dict[str, Any]] = {}
    pages = iter_pages(asking.fetch, CONTACTS, "contacts", params, limit=client.config.page_size)
    read: Page | None = None
    for count, page in enumerate(pages, 1):
        read = page
        for contact in page.items:
            if not low <= _created_at(contact) <= high:
                log.warning("amo_created_filter_ignored", low=low, high=high,
                            created_at=contact.get("created_at"))  # fmt: skip
                raise InvariantError(IGNORED)
            found[int(contact["id"])] = contact
        if count >= MAX_PAGES:
            raise InvariantError("cannot reconcile a lost create: too many new contacts to scan")
    asking.check_end(read, believe_end=True)
    dates.check()
    return list(found.values())


class Reasker:
    """A look-up's fetch that asks a contacts page again, `ASKS` times in all and
    `reconcile_settle_s` apart, while it lists nothing (amoCRM's spurious 204s do not persist);
    `empty` is the page that still listed nothing (None: the last answer listed something)."""

    def __init__(self, client: AmoClient, get: Fetch) -> None:
        self.client, self.get = client, get
        self.empty: int | None = None

    def fetch(self, path: str, params: Mapping[str, Any]) -> Reply:
        number = int(params.get("page", 1))
        session = self.client.session
        for ask in range(ASKS):
            if ask:  # ends at once, AmoStoppedError, when the process is asked to stop
                pause(session.clock, session.stopping, self.client.reconcile_settle_s)
            reply = self.get(path, params)
            if listed(number, reply, "contacts") is not None:
                self.empty = None
                return reply
            log.info("amo_lookup_page_empty", page=number, ask=ask + 1, asks=ASKS)
        self.empty = number
        return reply

    def check_end(self, last: Page | None, *, believe_end: bool) -> None:
        """`EmptyAnswerError` when the scan ended on a page that kept listing nothing, unless
        `believe_end` and it followed a full page that announced no more (page 1's never is)."""
        if self.empty is None:
            return
        follows = last is not None and last.number == self.empty - 1
        if believe_end and follows and last is not None and not last.has_next:
            return
        log.warning("amo_lookup_empty_answer", page=self.empty, asks=ASKS)
        raise EmptyAnswerError(
            f"cannot reconcile a lost create: amoCRM answered page {self.empty} of the look-up "
            f"with no contacts {ASKS} times where it cannot be empty (a spurious 204?); "
            "not resent, so as not to create it twice"
        )


def _created_at(contact: Mapping[str, Any]) -> float:
    try:
        return as_int(contact.get("created_at"))
    except ValueError:
        return math.nan  # outside every range: the read is not trusted


class _Dates:
    """Bounds of amoCRM's clock less ours, from the `Date` of each answer (whole seconds, set
    between our send and our receipt)."""

    def __init__(self, clock: Clock, get: Fetch) -> None:
        self.clock, self.get = clock, get
        self.ahead_at_least = -math.inf
        self.ahead_at_most = math.inf

    def fetch(self, path: str, params: Mapping[str, Any]) -> Reply:
        before = self.clock.now().timestamp()
        reply = self.get(path, params)
        after = self.clock.now().timestamp()
        stamp = date_of(reply.headers)
        if stamp is None:
            self.ahead_at_least = math.nan  # nothing to check the clocks by
        else:
            self.ahead_at_least = max(self.ahead_at_least, stamp - after)
            self.ahead_at_most = min(self.ahead_at_most, stamp + 1 - before)
        return reply

    def check(self) -> None:
        """`InvariantError` unless amoCRM's clock is known to be within the slack of ours."""
        limit = SLACK_S - 1
        if not (-limit <= self.ahead_at_least and self.ahead_at_most <= limit):
            log.warning("amo_created_clock_unknown", ahead_at_least=self.ahead_at_least,
                        ahead_at_most=self.ahead_at_most, slack_s=SLACK_S)  # fmt: skip
            raise InvariantError(
                "cannot reconcile a lost create: amoCRM's clock is not known to be within "
                f"{SLACK_S} s of ours"
            )
