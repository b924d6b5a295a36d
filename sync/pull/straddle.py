"""Ties across a page boundary of the descending walk (filters off), and their re-read.

amoCRM documents no order among contacts sharing one `updated_at` second (amocrm-api.md §3), and
a real account may draw it anew for every request. Page N and page N+1 of
`order[updated_at]=desc` are two requests: a tie second whose members straddle their boundary
can put a member on page N+1's side when page N is read and on page N's side when page N+1 is
read, so neither lists it. The walk records such seconds (`WalkTies`: the last contact of one
page and the first of the next share a second), with the positions they held.

The page API has no offset, but `limit` may vary: page P of limit L covers the positions
[(P-1)L, PL). `reread_tie` asks the one page whose span holds the tie's positions with a
neighbour on each side (and a small margin: edits while we read move it). That page is one
answer in one order, so when it lists a contact of a newer second before the tie's first member
(or starts at position 0) and one of an older second after its last (or is the list's end), it
lists every member of the tie: the tie is read whole. A tie no page of at most 250 can hold (a
bulk edit of thousands in one second), or one that keeps moving, is left to the caller, which
reads the account by id (`sync.pull.filters_off.since_by_id`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.amo.client import CONTACTS, AmoClient
from sync.amo.pages import MAX_LIMIT, date_of, ends_scan, listed
from sync.pull.stage import updated

REREAD_TRIES = 3  # pages asked for one tie before it is left to the read by id
MARGIN = 5  # positions beyond the neighbours a re-read also covers, for edits meanwhile
# positions a re-read covers past the contacts its last page proved newer, once the tie has moved
# further than MARGIN (every edit during a long walk moves it one down): the tie is found in one
# more request, not only after the tries ran out and the account was read by id
MOVED_SPAN = 120


@dataclass
class TieSpan:
    """A second seen across a page boundary, and the walk positions (0-based) it held."""

    second: int
    first: int
    last: int


class WalkTies:
    """The seconds a descending walk saw across a page boundary (`page` is called for every
    page of the walk, in order, with its number, the walk's limit and all its items)."""

    def __init__(self) -> None:
        self.spans: dict[int, TieSpan] = {}
        self._tail: TieSpan | None = None  # the previous page's last second, where it lay

    def page(self, number: int, limit: int, items: Sequence[Mapping[str, Any]]) -> None:
        if not items:
            return
        base = (number - 1) * limit
        head, tail = _edge(items, base, 0), _edge(items, base, len(items) - 1)
        before = self._tail
        if before is not None and before.second == head.second:
            span = self.spans.setdefault(head.second, before)
            span.first, span.last = min(span.first, before.first), max(span.last, head.last)
        self._tail = tail


def _edge(items: Sequence[Mapping[str, Any]], base: int, at: int) -> TieSpan:
    """The run of items sharing the second of `items[at]` (the first or the last)."""
    second = updated(items[at])
    same = [k for k, item in enumerate(items) if updated(item) == second]
    return TieSpan(second, base + same[0], base + same[-1])


def page_holding(low: int, high: int) -> tuple[int, int] | None:
    """(page, limit) of the smallest page whose span [(page-1)*limit, page*limit) holds the
    positions [low, high], or None when no limit up to 250 gives one."""
    for limit in range(high - low + 1, MAX_LIMIT + 1):
        number = low // limit + 1
        if number * limit - 1 >= high:
            return number, limit
    return None


@dataclass
class Reread:
    """What `reread_tie` found: the tie's members (None: not proven whole) and amoCRM's clock
    (its `Date` header) when it answered last, if it said."""

    items: list[dict[str, Any]] | None = None
    amo_now: float | None = None


def amo_clock(client: AmoClient) -> float | None:
    """amoCRM's clock now (the `Date` of a one-contact page), or None when it does not say."""
    reply = client.get(CONTACTS, {"order": {"updated_at": "desc"}, "page": 1, "limit": 1})
    return date_of(reply.headers)


def reread_tie(client: AmoClient, with_: Sequence[str], span: TieSpan) -> Reread:
    """Every contact now at `span.second`, from one page shown to list all of them (the module
    docstring); `items` None when no page of at most 250 held it in `REREAD_TRIES` asks."""
    found = Reread()
    first, last, size = span.first, span.last, span.last - span.first + 1
    for _ in range(REREAD_TRIES):
        placed = page_holding(max(0, first - 1 - MARGIN), last + 1 + MARGIN) or page_holding(
            max(0, first - 1), last + 1
        )
        if placed is None:
            return found
        number, limit = placed
        params = {"order": {"updated_at": "desc"}, "with": list(with_) or None}
        reply = client.get(CONTACTS, {**params, "page": number, "limit": limit})
        found.amo_now = date_of(reply.headers) or found.amo_now
        page = listed(number, reply, "contacts")
        if page is None:  # a 204 where contacts are: amoCRM's spurious one; ask again
            continue
        items, base = page.items, (number - 1) * limit
        tied = [k for k, item in enumerate(items) if updated(item) == span.second]
        newer = [k for k, item in enumerate(items) if updated(item) > span.second]
        older = [k for k, item in enumerate(items) if updated(item) < span.second]
        above = base == 0 or bool(newer)  # a newer contact comes before every member
        below = ends_scan(page, limit) or bool(older)
        if above and below:
            found.items = [items[k] for k in tied]
            return found
        size = max(size, len(tied))
        if tied:  # where the members are now, widened on the side not proven
            first, last = base + tied[0], base + tied[-1]
            missing = max(1, size - len(tied))
            first, last = (first - missing, last) if not above else (first, last + missing)
        elif not below:  # every contact listed is newer: the tie lies further down, moved
            # by an unknown number of edits since the walk read it (each puts a contact read
            # below it at the front): look in a wide span past those proven newer
            first = base + len(items)
            last = max(last + len(items), first + MOVED_SPAN)
        else:  # every contact listed is older: further up
            first, last = max(0, first - len(items)), max(0, last - len(items))
    return found
