"""Page-by-page iteration over amoCRM list endpoints.

Rules (amocrm-api.md §2, §11): pages are 1-based, `limit` ≤ 250; **204 No Content means empty**,
and so does a 200 with no items (`listed`: a stand-in may answer an empty list so); a page without
`_links.next` is the last unless it is full (`ends_scan`: a server that never sends `next`, or
sends it on some pages only, must not end a scan early: the page after a full one is asked,
and its 204 ends it); a repeated `next` link or `_page` number, or a page that
repeats the previous page's ids, is a pagination loop → `InvariantError`. A 204 on page > 1 after
a page that announced `next` is re-read once before it is believed (amoCRM sometimes sends a
spurious 204 mid-scan).

Pages are requested by number with the caller's own parameters (the `next` link is only the
"there is more" signal and the loop guard), so no link can send our token to another host and a
server that drops parameters from its links cannot silently widen the scan. That also lets
`prefetch > 1` fetch the following pages in parallel from a small thread pool; pages are still
yielded one by one, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from sync.amo.session import Reply
from sync.errors import InvariantError
from sync.logs import get_logger

log = get_logger("sync.amo.pages")

MAX_LIMIT = 250

# GET path with params → Reply (AmoSession.send, bound).
Fetch = Callable[[str, Mapping[str, Any]], Reply]


@dataclass(frozen=True)
class Page:
    """One page of a list: its number, its items and whether the server announced another."""

    number: int
    items: list[dict[str, Any]]
    has_next: bool
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _next_href(data: Mapping[str, Any]) -> str | None:
    links = data.get("_links")
    nxt = links.get("next") if isinstance(links, Mapping) else None
    href = nxt.get("href") if isinstance(nxt, Mapping) else None
    return href if isinstance(href, str) and href else None


def parse_page(number: int, reply: Reply, key: str) -> Page:
    """A 200 list answer → `Page`; a wrong shape is an `InvariantError`, never a silent skip."""
    data = reply.data
    if not isinstance(data, Mapping):
        raise InvariantError(f"amoCRM list page {number} is not a JSON object")
    embedded = data.get("_embedded")
    items = embedded.get(key) if isinstance(embedded, Mapping) else None
    if items is None:
        items = []
    if not isinstance(items, list):
        raise InvariantError(f"amoCRM list page {number}: _embedded.{key} is not a list")
    return Page(number, items, _next_href(data) is not None, data)


def listed(number: int, reply: Reply, key: str) -> Page | None:
    """A list answer → its `Page`, or None when it lists nothing: a 204 as amoCRM documents, or a
    200 with an empty `_embedded.<key>` (the vendor does not rule it out; the same to a reader)."""
    if reply.data is None:
        return None
    page = parse_page(number, reply, key)
    return page if page.items else None


def ends_scan(page: Page, limit: int) -> bool:
    """Whether a page is the last: no `next` and not full. A full page without `next` is read
    on whatever the pages before it said: a server may never send `next`, or send it on some
    pages only (then "it sent `next` before" proves nothing about this page), and amoCRM's own
    exactly full last page costs one more request, answered 204. A short page with `next` is
    not the end either (a server may cap pages below `limit`)."""
    return not page.has_next and len(page.items) < limit


class _LoopGuard:
    """Remembers what a scan has seen, to catch a server that pages in circles."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.links: set[str] = set()
        self.numbers: set[int] = set()
        self.last_ids: tuple[Any, ...] = ()

    def check(self, page: Page) -> None:
        href = _next_href(page.data)
        if href is not None:
            if href in self.links:
                raise InvariantError(f"pagination loop on {self.path}: next link {href} repeated")
            self.links.add(href)
        number = page.data.get("_page")
        if isinstance(number, int):
            if number in self.numbers:
                raise InvariantError(f"pagination loop on {self.path}: page {number} repeated")
            self.numbers.add(number)
        ids = tuple(item.get("id") for item in page.items if isinstance(item, Mapping))
        if ids and ids == self.last_ids:
            raise InvariantError(
                f"pagination loop on {self.path}: page {page.number} repeats the previous page"
            )
        self.last_ids = ids


def none_above(page: Page | None, last_id: int) -> bool:
    """Whether a page read with `order[id]=desc` shows no contact with an id above `last_id`
    (so a 204 after a page announcing more was the end, not a spurious one mid-read). A 204
    (None), an empty page or an order not kept proves nothing: False."""
    if page is None:
        return False
    ids = [int(i["id"]) for i in page.items]
    return bool(ids) and ids == sorted(ids, reverse=True) and ids[0] <= last_id


def iter_pages(
    fetch: Fetch,
    path: str,
    key: str,
    params: Mapping[str, Any] | None = None,
    *,
    limit: int = MAX_LIMIT,
    start_page: int = 1,
    prefetch: int = 1,
    pool: ThreadPoolExecutor | None = None,
) -> Iterator[Page]:
    """Yield the pages of `GET path` in order until the server says there are no more."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    base = {k: v for k, v in (params or {}).items() if k not in ("page", "limit")}
    guard = _LoopGuard(path)

    def load(number: int) -> Reply:
        return fetch(path, {**base, "page": number, "limit": limit})

    fetcher = _Prefetcher(load, pool if prefetch > 1 else None, prefetch)
    number, promised = start_page, False
    try:
        while True:
            page = listed(number, fetcher.get(number), key)
            if page is None and promised:  # not after a full page without `next`: the end
                log.debug("amo_page_reread", path=path, page=number, reason="204_mid_scan")
                page = listed(number, load(number), key)
            if page is None:
                return
            guard.check(page)
            yield page
            if ends_scan(page, limit):
                return
            number, promised = number + 1, page.has_next
    finally:
        fetcher.close()


class _Prefetcher:
    """Keeps up to `depth` page requests in flight ahead of the consumer."""

    def __init__(
        self, load: Callable[[int], Reply], pool: ThreadPoolExecutor | None, depth: int
    ) -> None:
        self.load = load
        self.pool = pool
        self.depth = max(1, depth)
        self.pending: deque[tuple[int, Future[Reply]]] = deque()

    def get(self, number: int) -> Reply:
        if self.pool is None:
            return self.load(number)
        while self.pending and self.pending[0][0] < number:
            self.pending.popleft()[1].cancel()
        next_number = self.pending[-1][0] + 1 if self.pending else number
        while len(self.pending) < self.depth:
            self.pending.append((next_number, self.pool.submit(self.load, next_number)))
            next_number += 1
        _, future = self.pending.popleft()
        return future.result()

    def close(self) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pending.clear()


def date_of(headers: Mapping[str, str]) -> float | None:
    """The answer's `Date` header (amoCRM's clock, whole seconds) as unix seconds, or None when
    it is missing or unreadable."""
    raw = headers.get("date") or headers.get("Date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return None
