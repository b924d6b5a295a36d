"""The fallback for accounts whose API filters amoCRM ignores (`is_api_filter_enabled` false).

With filters off, `filter[updated_at]` is silently ignored, so no window can be asked for; only
the order and page numbers work. Pages are asked one at a time, in order.

**Incremental — `descending(start)`.** `order[updated_at]=desc` page by page, stopping at the
first contact older than the start. A change while we read moves a contact to the front, which
shifts pages back: contacts are read twice, never skipped. A deletion in the part already read
shifts them forward and can skip one, so the caller keeps the old cursor when deletion events
fall into the walk (the next run reads the window again). The cursor is stored only at the end.
Cost: every page from the newest contact down to the start, one round trip each — the same
pages the windows would read, but with no parallelism. A tie second across a page boundary may
have members neither page listed (amoCRM's tie order may change per request): the walk records
them (`sync.pull.straddle.WalkTies`) for the caller to read whole, or, for a tie no page can
hold, to read the account by id (`since_by_id`). A 204 mid-walk is asked again
(`MID_WALK_ASKS`).

**Full resync — `by_id()`.** `order[id]=asc` page by page. Edits cannot shift it (ids do not
change); a deletion or restore during the walk can (the contact at a page's edge is then listed by
no page). The caller compares amoCRM's events before and after the walk (`Events.moved_since`):
a shift holds the cursor, and every stored live contact the walk did not list is read by id. A
204 after a page that announced more ends the walk only when `order[id]=desc` shows no contact
above the last id listed (a server may announce `next` on a full last page); else it fails: a
spurious mid-scan 204 must not cut a resync short. A
full resync here guarantees: every contact stored before it is confirmed (read, or tombstoned
when amoCRM does not have it); a contact new since the last run that a deletion hid from the walk
is stored by the next incremental run, not by this one (see docs/pull.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sync.amo.client import CONTACTS, AmoClient
from sync.amo.pages import Page, iter_pages, listed, none_above
from sync.errors import InvariantError
from sync.pull.empty import EMPTY_ASKS, EMPTY_PAUSE_S
from sync.pull.stage import log
from sync.pull.straddle import WalkTies

MID_WALK_ASKS = 6  # more asks of a descending page answered 204 twice after "more follows"


def _u(item: Mapping[str, Any]) -> int:
    return int(item.get("updated_at") or 0)


def descending(
    client: AmoClient,
    with_: Sequence[str],
    page_size: int,
    start: int,
    ties: WalkTies | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Contacts with `updated_at` ≥ start, newest first, a page at a time; `ties` records the
    seconds that straddle a page boundary. A page answering 204 after one that announced more
    (amoCRM's spurious mid-scan 204, amocrm-api.md §2) is asked again, after a short pause, up
    to `MID_WALK_ASKS` more times; then the walk raises `InvariantError`."""
    number, resumed = 1, 0
    while True:
        if number == 1:
            pages = _listing(client, order=("updated_at", "desc"), with_=with_, limit=page_size)
        else:  # the walk again from the page that answered 204
            params = {"order": {"updated_at": "desc"}, "with": list(with_) or None}
            pages = iter_pages(client.get, CONTACTS, "contacts", params, limit=page_size,
                               start_page=number)  # fmt: skip
        cut = number > 1  # a resumed walk that lists nothing is still cut short
        try:
            for page in pages:
                if ties is not None:
                    ties.page(page.number, page_size, page.items)
                wanted = [i for i in page.items if _u(i) >= start]
                if wanted:
                    yield wanted
                if len(wanted) < len(page.items):
                    return  # reached the start
                cut, number = page.has_next, page.number + 1  # a 204 next cuts the walk short
        finally:
            pages.close()  # type: ignore[attr-defined]
        if not cut:
            return
        resumed += 1
        if resumed > MID_WALK_ASKS:
            raise InvariantError("amoCRM answered 204 in the middle of the descending walk")
        log.info("pull_walk_resumed", page=number, asked=resumed, reason="204_mid_scan")
        time.sleep(EMPTY_PAUSE_S)


def by_id(
    client: AmoClient, with_: Sequence[str], page_size: int, prefetch: int
) -> Iterator[list[dict[str, Any]]]:
    """Every live contact by `order[id]=asc` (pages fetched `prefetch` ahead, yielded in order)."""
    pages = _listing(client, order=("id", "asc"), with_=with_, limit=page_size, prefetch=prefetch)
    more, last_id = False, 0
    try:
        for page in pages:
            more = page.has_next
            last_id = max([last_id, *(int(i["id"]) for i in page.items)])
            yield page.items
    finally:
        pages.close()  # type: ignore[attr-defined]
    # iteration ended on a 204 after a page that promised more
    if more and not _nothing_above(client, last_id):
        raise InvariantError("amoCRM answered 204 in the middle of the full resync")


def since_by_id(
    client: AmoClient, with_: Sequence[str], page_size: int, start: int, prefetch: int
) -> Iterator[list[dict[str, Any]]]:
    """Every live contact with `updated_at` ≥ start, from a walk of the whole account by
    `order[id]=asc` (ids are unique: no tie to reorder): the read of a tie no page can hold
    (`sync.pull.straddle`). It costs a request per 250 contacts of the account."""
    for items in by_id(client, with_, page_size, prefetch):
        wanted = [i for i in items if _u(i) >= start]
        if wanted:
            yield wanted


def _listing(client: AmoClient, **params: Any) -> Iterator[Page]:
    """The pages of an unfiltered list. Its page 1 answers 204 only for an account with no
    contacts, or spuriously (amocrm-api.md §2): it is asked again, after a short pause, up to
    `EMPTY_ASKS` times in all before the account is taken as empty (a walk cut short here
    stored nothing: the descending walk kept its cursor, but its final pass and the full
    resync by id exited 0 without the contacts)."""
    for asked in range(1, EMPTY_ASKS + 1):
        pages = client.iter_contacts(**params)
        try:
            first = next(pages, None)
            if first is not None:
                yield first
                yield from pages
                return
        finally:
            pages.close()  # type: ignore[attr-defined]
        if asked < EMPTY_ASKS:
            time.sleep(EMPTY_PAUSE_S)
    log.warning("pull_account_empty", asked=EMPTY_ASKS)


def _nothing_above(client: AmoClient, last_id: int) -> bool:
    """Whether no contact has an id above `last_id`: then the 204 after a page announcing more
    was the end (a server may announce `next` on a full last page: the vendor documents the
    last page without it, not how it knows a full page is the last), not amoCRM's spurious
    mid-scan 204. A 204 here, or an order not kept, proves nothing."""
    reply = client.get(CONTACTS, {"order": {"id": "desc"}, "limit": 2, "page": 1})
    return none_above(listed(1, reply, "contacts"), last_id)
