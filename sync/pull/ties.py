"""The fetch stage's reads beside the windows: the newest page, and seconds read by id (ties).

**The top.** A full resync, and an incremental run whose first page is full (a backlog), also
read the newest page (`order[updated_at]=desc`, no filter): it proves everything above its lowest
second U read, bounds the open window at U + 1 for splitting, and tells the run amoCRM's newest
time before any tie is read.

**Ties.** A full page all in one second U (more contacts in it than a page holds) is read by id:
`filter[updated_at][from]=U&[to]=U&order[id]=asc`, pages 1, 2, … several in flight: one page
beyond the last known to exist at first, then as many as pages were read, at most `SPECULATIVE`
(a second of two pages wastes one page answering 204, a bulk second of 16 is read 4 at a time).
Pages addressed by number can shift when a contact leaves U during the read, so every tie
records `theta` (amoCRM's newest time known when its read began) and the listing sequence
number; `sync.pull.tail` checks them after the walk. A second a bulk edit empties before or
while it is read answers 204 for good: the 204 is believed only when the windows' probe
(`sync.pull.empty`) shows that second empty, never from a 204 or an empty answer alone
(`_check_emptied`). See docs/pull.md for the whole argument.
"""

from __future__ import annotations

import threading
from typing import Any

from sync.amo.pages import Page
from sync.amo.turns import Withdrawn
from sync.errors import InvariantError
from sync.pull.complete import Completion
from sync.pull.stage import (
    SETTLE_S,
    SPECULATIVE,
    TIE_ASKS,
    TIE_ROUNDS,
    FiltersIgnored,
    Tie,
    ids_of,
    log,
    updated,
)
from sync.pull.windows import Window


class TieReads(Completion):
    """The newest page and the ties of one run."""

    def _ask_top(self) -> None:
        self.top = "asked"
        self.list_requests += 1
        self._submit(
            lambda: self._list(None, ("updated_at", "desc"), 1), self._on_top, produces=True
        )

    def _on_top(self, page: Page | None) -> None:
        self.top = "done"
        if page is None:
            return  # an empty account, or a spurious 204: the windows read everything anyway
        self._seen(page.items)
        stamps = [updated(i) for i in page.items]
        if stamps != sorted(stamps, reverse=True):
            raise FiltersIgnored("amoCRM ignored order[updated_at]=desc")
        low = stamps[-1]
        if self._ends(page):  # the whole account in one page
            lows = [w.pos for w in self.plan.windows]
            fresh = [i for i in page.items if int(i["id"]) not in self.first_ids]
            self._collect(fresh, (min([low, *lows]), None))
            for window in list(self.plan.windows):
                self.plan.finish(window)
            return
        self._collect(
            [i for i in page.items if int(i["id"]) not in self.first_ids], (low + 1, None)
        )
        self.plan.top = low + 1
        for window in list(self.plan.windows):
            if window.pos > low:
                self.plan.finish(window)
            elif window.hi is None or window.hi > low + 1:
                window.hi = low + 1

    # --- ties -------------------------------------------------------------------------------

    def _start_tie(self, window: Window, found: list[dict[str, Any]], speculative: int = 1) -> None:
        if any(t.second == window.pos for t in self.ties):  # read by id in this run already
            window.busy, window.pos, window.boundary = False, window.pos + 1, frozenset()
            if window.hi is not None and window.pos >= window.hi:
                self.plan.finish(window)
            return
        if window.hi is None or window.hi > window.pos + 1:  # the rest goes on meanwhile
            rest = Window(window.pos + 1, window.hi, rate=window.rate, pages=1)
            self.plan.windows.append(rest)
            window.hi = window.pos + 1
        window.busy = True  # blocked until the tie is read
        if not self.next_sent:  # its first page may be the last though full: ask no further
            speculative = 0
        tie = Tie(window.pos, window, known=ids_of(found), speculative=speculative)
        log.info("pull_tie_found", second=tie.second)
        self.ties.append(tie)
        if self.top == "none" and self.setup.top_allowed:
            self._ask_top()
        self._ask_baseline()

    def _ask_baseline(self) -> None:
        if self.baseline_state == "none":
            self.baseline_state = "asked"
            self._submit(self.baseline, lambda _: setattr(self, "baseline_state", "done"))

    def _release_ties(self) -> None:
        """A tie's read begins once the events listed before it are known."""
        if self.baseline_state == "asked":
            return
        for tie in self.ties:
            if tie.waiting and not tie.verified:
                tie.waiting = False
                tie.theta = max(self.newest or 0, self.amo_start() - SETTLE_S)
                tie.started = self.listings

    def _tie_filter(self, second: int) -> dict[str, Any]:
        return {"updated_at": {"from": second - self.margin, "to": second + self.margin}}

    def _ask_tie(self, tie: Tie, number: int) -> None:
        """Page `number` of the tie; given up while it waits for its start if the tie turns out
        to end before it (a page without `next`): a page past the end answers only 204."""
        self.list_requests += 1
        withdrawn = tie.unsent[number] = threading.Event()
        turns = self.client.session.limiter.turns

        def read() -> Any:  # a Page, None (204) or Withdrawn
            with turns.unless(withdrawn):
                try:
                    return self._list(self._tie_filter(tie.second), ("id", "asc"), number)
                except Withdrawn as exc:
                    return exc

        tie.out[number] = self._submit(
            read, lambda page: self._on_tie(tie, number, page), produces=True
        )

    def _on_tie(self, tie: Tie, number: int, page: Page | Withdrawn | None) -> None:
        tie.unsent.pop(number, None)
        tie.out.pop(number, None)
        if isinstance(page, Withdrawn):
            self.list_requests -= 1  # never sent
            tie.empty.add(number)  # asked again if a page before it says it exists after all
        elif page is None:
            self._on_tie_204(tie, number)
        else:
            self._seen(page.items)
            mine = self._tie_items(tie, page.items)
            tie.answered[number] = page.has_next
            tie.top_id = max([tie.top_id, *ids_of(page.items)])
            tie.empty.discard(number)
            if page.has_next:
                tie.frontier = max(tie.frontier, number + 1)
                # more than a page after all: ask ahead as far as the pages read so far (a
                # second of two pages wastes one speculative page, not SPECULATIVE)
                tie.speculative = min(SPECULATIVE, len(tie.answered))
                if number + 1 in tie.empty:  # it exists after all: ask again
                    tie.empty.discard(number + 1)
                    tie.queue.append(number + 1)
            elif not self._ends(page):
                self._full_without_next(tie, number)
            else:
                tie.last = number if tie.last is None else max(tie.last, number)
            fresh = [i for i in mine if int(i["id"]) not in tie.known | tie.ids]
            tie.ids.update(ids_of(mine))
            self._collect(fresh, None)
        self._tie_settled(tie)

    def _tie_settled(self, tie: Tie) -> None:
        """Pages past the last are given up before they start; a tie read whole is done. Those
        already sent no longer hold back what waits for every request that may list contacts
        (the last part-full chat batch, a full resync's or CLI pull's final pass): they answer
        204, and the tie is whole without them. They stay in flight, and an answer with
        contacts after all is still stored before the run ends."""
        if tie.last is not None:
            for later, withdrawn in tie.unsent.items():
                if later > tie.last:
                    withdrawn.set()
            for later, future in tie.out.items():
                if later > tie.last:
                    self.producers.discard(future)
        if tie.complete():
            self._tie_done(tie)

    @staticmethod
    def _full_without_next(tie: Tie, number: int) -> None:
        """A full page without `next` is not known to be the last (a stand-in may never send
        `next`): the page after it is asked, and its 204 ends the tie. Already answered 204:
        the end (the vendor's last page has no `next`), asked no more."""
        if number + 1 in tie.empty:
            tie.last = number if tie.last is None else max(tie.last, number)
        else:
            tie.frontier = max(tie.frontier, number + 1)
            tie.speculative = min(SPECULATIVE, len(tie.answered))  # as after a page with `next`

    def _on_tie_204(self, tie: Tie, number: int) -> None:
        tie.asks[number] = tie.asks.get(number, 0) + 1
        if number <= tie.frontier and tie.answered.get(number - 1, True):
            if tie.asks[number] < TIE_ASKS:
                tie.queue.append(number)
            elif number - 1 in tie.answered:  # persisting after a page that announced more
                self.list_requests += 1
                self._submit(
                    lambda: self._list(self._tie_filter(tie.second), ("id", "desc"), 1),
                    lambda page: self._tie_end(tie, number, page),
                )
            else:  # page 1: emptied (a bulk edit moved the second on) or amoCRM's fault
                self._check_emptied(tie, number)
            return
        tie.empty.add(number)
        if tie.last is None and number - 1 in tie.answered and not tie.answered[number - 1]:
            tie.last = number - 1

    def _tie_end(self, tie: Tie, number: int, page: Page | None) -> None:
        """Page `number` keeps answering 204 after a page that announced more, and this is page
        1 by `order[id]=desc`. The tie ends before `number` if that page lists every contact of
        the tie's range above the highest id its pages listed: it is short (it lists the whole
        range: a second that shrank below the pages read), or its lowest id is at or below that
        id (nothing above it: a server may announce `next` on a full last page; or some, all
        listed here: a second that shrank while read). Contacts at or below that id were on the
        pages read unless one left the second meanwhile, which the tie's check sees (it is read
        again). A 204 here is probed (`_check_emptied`). Else amoCRM's spurious 204 may hide
        contacts: a full page whose lowest id is above that id shows contacts the pages read
        never reached, so the 204 is spurious and the page is asked again (`_tie_spurious`: at
        most `TIE_ROUNDS` rounds, then the run fails rather than cut the read short)."""
        if page is None:
            self._check_emptied(tie, number)
            return
        ids = [int(i["id"]) for i in page.items]
        whole = self._ends(page)
        if not whole and ids != sorted(ids, reverse=True):  # proves nothing
            raise InvariantError(f"amoCRM keeps answering 204 for the contacts of {tie.second}")
        self._seen(page.items)
        mine = self._tie_items(tie, page.items)  # raises if the filter was not kept
        if not whole and ids[-1] > tie.top_id:
            self._tie_spurious(tie, number, lowest=ids[-1], top_id=tie.top_id)
            return
        self._collect([i for i in mine if int(i["id"]) not in tie.known | tie.ids], None)
        above = sum(1 for i in ids if i > tie.top_id)
        tie.ids.update(ids_of(mine))
        log.info("pull_tie_end_checked", second=tie.second, page=number, above=above)
        self._tie_ends_before(tie, number)

    def _tie_ends_before(self, tie: Tie, number: int) -> None:
        tie.empty.add(number)
        if tie.last is None:
            tie.last = number - 1
        self._tie_settled(tie)

    def _tie_spurious(self, tie: Tie, number: int, **shown: int | None) -> None:
        """A persisting 204 on page `number` shown spurious (by the probe of U, or for a later
        page by page 1 by `order[id]=desc`): the page is asked `TIE_ASKS` times again; after
        `TIE_ROUNDS` such rounds the run fails."""
        tie.rounds += 1
        if tie.rounds >= TIE_ROUNDS:
            raise InvariantError(f"amoCRM keeps answering 204 for the contacts of {tie.second}")
        log.info("pull_tie_spurious_204", second=tie.second, page=number, **shown)
        tie.asks[number] = 0
        tie.queue.append(number)

    def _check_emptied(self, tie: Tie, number: int) -> None:
        """Page `number` of the tie keeps answering 204 where the run listed contacts (its page
        1; or a later one, and page 1 by `order[id]=desc` too): the second is proven emptied,
        and the read ends before `number`, or the 204 is shown spurious, and the page is asked
        again (`sync.pull.empty.EmptyProof._check_emptied`: the windows' probe, aimed at U)."""
        raise NotImplementedError  # the fetch stage's empty proof reads it

    def _tie_items(self, tie: Tie, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stamps = [updated(i) for i in items]
        if min(stamps) < tie.second - self.margin or max(stamps) > tie.second + self.margin:
            raise FiltersIgnored(f"asked {tie.second}, got {min(stamps)}..{max(stamps)}")
        return [i for i in items if updated(i) == tie.second]

    def _tie_done(self, tie: Tie) -> None:
        if tie.finished:
            return  # done already (a late answer past the end)
        tie.finished = True
        log.info("pull_tie_read", second=tie.second, contacts=len(tie.ids | tie.known))
        window = tie.window
        window.busy = False
        window.pos, window.promised, window.boundary = tie.second + 1, False, frozenset()
        window.pages += 1
        if window.hi is not None and window.pos >= window.hi:
            self.plan.finish(window)
