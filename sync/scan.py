"""How an incremental pull walks amoCRM's contacts since its cursor, without missing a version.

The cursor `C` means "every contact version with `updated_at` < C is stored". It only moves
forward, is never stored beyond the run's start `R`, and each run starts reading at C - overlap
(inclusive; versions read twice are no-ops in the database).

**Filters on — keyset walk, ascending.** Every request is page 1 of
`filter[updated_at][from]=F&order[updated_at]=asc`. After a full page whose last contact has
`updated_at` U, the next request starts at F = U (inclusive: the contacts of second U are read
again, so none on the far side of the page boundary is lost). Page numbers are never used here, so
contacts that change while we read (they jump to the end of the order) cannot shift a page and
make us skip another one. The batch's cursor is U (everything before U is stored). At the end of
the data the cursor is the newest `updated_at` read + 1: amoCRM's own clock, never ours, so a
skewed local clock cannot push the cursor past versions amoCRM has not written yet (it is still
capped at R).

**Ties — more contacts in one second than a page holds** (bulk imports, 1-second `updated_at`):
the keyset cannot get past that second, so that one second is read by id
(`filter[updated_at][from]=U&[to]=U&order[id]=asc`, page by page), and read again until two
passes in a row return the same ids: a contact of that second changing during a pass (and so
leaving it) would shift the pages and could skip another, and it also makes the next pass differ.
Then the cursor moves to U + 1.

**Filters never trusted.** A page with a contact older than the requested bound, or not in
ascending order, means amoCRM ignored the filter (accounts without `is_api_filter_enabled`):
`FiltersIgnored` is raised and the caller switches to the descending walk. If the date bounds
turn out to be exclusive (the contacts of second U are missing when asked from U), the walk asks
from U - 1 from then on.

**Filters off — descending walk.** `order[updated_at]=desc` with page numbers, stopping at the
first contact older than the start. A change while we read moves a contact to the front, which
shifts pages back: contacts are read twice, never skipped. Only a deletion in the part already
read shifts them forward, so the caller keeps the old cursor when deletion events fall into the
walk (the next run re-reads the window). The cursor is stored only when the walk ends.

**204s.** A 204 on page 1 of a keyset step (where data may well exist) is asked again once (the
first step of a daemon's poll is asked `first_attempts` = 1 time: a 204 there usually means nothing
changed, and the next poll asks again); a 204 mid-walk is re-read by `sync.amo.pages`. A 204 that
persists ends the walk early, with the cursor at the last stored page: nothing is skipped, the next
run continues.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.amo.client import AmoClient
from sync.amo.pages import Page
from sync.errors import InvariantError
from sync.logs import get_logger

log = get_logger("sync.scan")

MAX_TIE_PASSES = 8
MAX_STEPS = 1_000_000  # loop guard: no walk takes more keyset steps than this


class FiltersIgnored(Exception):
    """amoCRM answered with contacts outside the requested filter."""


@dataclass
class Batch:
    """Contacts to store, and the cursor to store with them (None: leave it as it is)."""

    items: list[dict[str, Any]]
    cursor: int | None


def _u(item: Mapping[str, Any]) -> int:
    return int(item.get("updated_at") or 0)


def _attempts(step: int, promised: bool, first: int) -> int:
    """How often a keyset step asks for its page after 204s: 4 times when the page before said
    more follows, `first` times for the walk's first page, else twice."""
    if promised:
        return 4
    return first if step == 0 else 2


class Walker:
    """Walks contacts for one run; `ceiling` is the run's start R (unix seconds)."""

    def __init__(
        self,
        client: AmoClient,
        with_: Sequence[str],
        page_size: int,
        ceiling: int,
        *,
        first_attempts: int = 2,
    ) -> None:
        self.client, self.with_, self.page_size = client, list(with_), page_size
        self.ceiling = ceiling
        self.first_attempts = first_attempts  # asks for the walk's very first page after a 204
        self.margin = 0  # 1 once the date bounds turn out to be exclusive

    def _cap(self, cursor: int) -> int:
        return min(cursor, self.ceiling)

    # --- ascending keyset walk ---------------------------------------------------------------

    def ascending(self, start: int) -> Iterator[Batch]:
        """Contacts with `updated_at` ≥ start, in keyset steps (see the module docstring)."""
        frm, boundary, promised = start, set[int](), False
        for step in range(MAX_STEPS):
            page = self._first_page(frm, attempts=_attempts(step, promised, self.first_attempts))
            if page is None:
                if promised:  # the last page said more follows: this 204 is not the end
                    raise InvariantError(f"amoCRM keeps answering 204 for updated_at >= {frm}")
                return  # nothing since the cursor (or a 204 twice): the cursor stays
            promised = page.has_next
            items = page.items
            self._check_ascending(items, frm)
            if self._bounds_exclusive(boundary, items, frm):
                log.warning("pull_bounds_exclusive", second=frm)
                self.margin, frm = 1, frm - 1
                continue
            last = _u(items[-1])
            if not page.has_next:  # amoCRM says this is all: everything up to `last` is stored
                yield Batch(items, self._cap(last + 1))
                return
            nxt = last - self.margin
            if nxt <= frm:  # the whole page is one second (or two, with margin): a tie
                yield Batch(items, None)
                yield from self._ties(frm, last + self.margin)
                yield Batch([], self._cap(last + 1))
                frm, boundary, promised = last + 1 - self.margin, set(), False
                continue
            yield Batch(items, self._cap(last))
            frm, boundary = nxt, {int(i["id"]) for i in items if _u(i) == last}
        raise InvariantError("incremental pull: keyset walk did not end (loop guard)")

    def _bounds_exclusive(self, boundary: set[int], items: list[dict[str, Any]], frm: int) -> bool:
        """Asked from U after a page ending in second U, none of its U contacts came back."""
        if not boundary or self.margin:
            return False
        return not boundary & {int(i["id"]) for i in items} and _u(items[0]) > frm

    def _first_page(self, frm: int, attempts: int) -> Page | None:
        for _attempt in range(attempts):  # a 204 where data may exist is asked again
            pages = self.client.iter_contacts(
                filters={"updated_at": {"from": frm}},
                order=("updated_at", "asc"),
                with_=self.with_,
                limit=self.page_size,
            )
            try:
                page = next(iter(pages), None)
            finally:
                pages.close()  # type: ignore[attr-defined]
            if page is not None and page.items:
                return page
        return None

    @staticmethod
    def _check_ascending(items: list[dict[str, Any]], frm: int) -> None:
        stamps = [_u(i) for i in items]
        if stamps and (stamps[0] < frm or stamps != sorted(stamps)):
            raise FiltersIgnored(f"asked from {frm}, got updated_at {stamps[0]}")

    def _ties(self, low: int, high: int) -> Iterator[Batch]:
        """Read seconds low..high by id until two passes agree."""
        previous: set[int] | None = None
        for number in range(1, MAX_TIE_PASSES + 1):
            seen: set[int] = set()
            for page in self._tie_pass(low, high):
                seen.update(int(i["id"]) for i in page)
                yield Batch(page, None)
            log.debug("pull_tie_pass", low=low, high=high, contacts=len(seen), number=number)
            if not seen:  # a 204 for a second amoCRM just listed: ask again
                continue
            if seen == previous:
                return
            previous = seen
        raise InvariantError(f"contacts of updated_at {low}..{high} kept changing while read")

    def _tie_pass(self, low: int, high: int) -> Iterator[list[dict[str, Any]]]:
        # page by page, never two at once: the server could answer page n+1 before page n, and a
        # contact joining the second in between would then push one past both reads
        pages = self.client.iter_contacts(
            filters={"updated_at": {"from": low, "to": high}},
            order=("id", "asc"),
            with_=self.with_,
            limit=self.page_size,
        )
        for page in pages:
            stamps = [_u(i) for i in page.items]
            if any(s < low - 1 or s > high + 1 for s in stamps):
                raise FiltersIgnored(f"asked {low}..{high}, got {min(stamps)}..{max(stamps)}")
            yield page.items

    # --- descending walk (filters off) -------------------------------------------------------

    def descending(self, start: int) -> Iterator[Batch]:
        """Contacts with `updated_at` ≥ start, newest first; the last batch carries the cursor.

        Pages are asked for one at a time: "a change is read twice, never skipped" holds only if
        page n is answered before page n+1 (answered the other way round, a contact changing in
        between shifts the last one of page n past both reads)."""
        pages = self.client.iter_contacts(
            order=("updated_at", "desc"), with_=self.with_, limit=self.page_size
        )
        complete, answered, newest = True, False, start
        try:
            for page in pages:
                answered = True
                wanted = [i for i in page.items if _u(i) >= start]
                newest = max([newest, *(_u(i) for i in wanted)])
                if wanted:
                    yield Batch(wanted, None)
                complete = not page.has_next  # a 204 after "more follows" cut the walk short
                if len(wanted) < len(page.items):
                    complete = True  # reached the start
                    break
        finally:
            pages.close()  # type: ignore[attr-defined]
        if not complete:
            raise InvariantError("amoCRM answered 204 in the middle of the descending walk")
        if not answered:
            return  # a 204 for the whole list: nothing, or a spurious one; the cursor stays
        yield Batch([], self._cap(newest + 1))
