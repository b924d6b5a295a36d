"""The fetch stage of the pull pipeline: windows walked in parallel (the loop and the windows).

`Fetcher.run()` walks the `Plan`'s windows (`sync.pull.windows`) with up to `workers` requests
in flight and hands every page to the sink complete — its contacts, their chat links, any custom
field definitions it needs that the run did not know, and the span of seconds it proves read.
The class is built in layers (`sync.pull.stage`: state; `complete`: chats and definitions;
`ties`: the newest page and seconds read by id; `tail`: after the windows; `empty`: a 204
proven); this module is the top one: the loop and the windows.

**A window** `[pos, hi)` is read by keyset: page 1 of `filter[updated_at][from]=pos&[to]=hi-1`,
`order[updated_at]=asc`. A full page whose last contact is at second U proves `[pos, U)` read;
the next request starts at U (its contacts come again and are dropped by id). A page that is not
full and has no `next` proves `[pos, hi)` (a full one without `next` too once amoCRM was seen to
send `next`; until then it is read on from U: a stand-in may never send `next`). Nothing is
addressed by position, so a deletion, restore or edit during the walk cannot shift a contact out
of view. A free worker splits the window with the most left (`Plan.steal`); a window split while
its request is in flight keeps only what falls below the split. The first window of a run must
prove amoCRM's date bounds inclusive (a continuation page lists the boundary second again) before
anything is split; if they are exclusive, every request asks one second wider from then on and
the first window's start second is read again.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from sync.errors import InvariantError
from sync.pull.empty import EmptyProof
from sync.pull.stage import (
    ENDING_PAGES,
    OUTBOX,
    SETTLE_S,
    SPECULATIVE,
    FetchSetup,
    FiltersIgnored,
    ids_of,
    log,
    updated,
)
from sync.pull.windows import Window

MIN_WINDOWS = 3  # windows read at once before the budget's queue may hold back a split

__all__ = ["SETTLE_S", "SPECULATIVE", "FetchSetup", "Fetcher", "FiltersIgnored"]


class Fetcher(EmptyProof):
    """One run's fetch stage (see the module docstring)."""

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Walk until every window, tie and page is done; raise the first failure."""
        pool = ThreadPoolExecutor(self.setup.workers + 2, thread_name_prefix="pull-fetch")
        self._pool = pool
        try:
            for window in self.plan.windows:
                window.busy = False
            self._await_connection()
            while True:
                if self.stop.is_set():
                    raise InvariantError("the pull stopped: its database end failed")
                self._hand_on()
                self._dispatch()
                if self.answered and self.filters_off():  # asked once amoCRM answered
                    raise FiltersIgnored("the account has API filtering off")
                if not self._requests_in_flight():
                    self._forget_connection()  # nothing was sent: it would never resolve
                    if self.outbox:
                        self.stop.wait(0.02)
                        continue
                    if self._next_phase():
                        continue
                    return
                if not self.producers and self._final_beside_chats():
                    continue
                pause = 0.02 if self.outbox else None
                watched = [*self.inflight, *filter(None, [self.connected])]
                done, _ = wait(watched, timeout=pause, return_when=FIRST_COMPLETED)
                self._answers(done)
        finally:
            self._forget_connection()
            for future in self.inflight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _await_connection(self) -> None:
        """The rest of the preamble goes out once the first request's headers are written."""
        if not self.answered:
            self.connected = self.client.session.next_written()  # watched beside the requests

    def _forget_connection(self) -> None:
        if self.connected is not None:
            self.connected.cancel()
            self.connected = None

    def _answers(self, done: set[Future[Any]]) -> None:
        connected = self.connected
        for future in done:
            if future is connected:
                self._first_answer()  # a no-op if an answer in `done` came first
                continue
            self.producers.discard(future)
            self.inflight.pop(future)(future.result())

    def _dispatch(self) -> None:
        self.stolen = False
        self.ending = self._walk_ending()
        self._release_ties()
        self._early_tail()
        while self._requests_in_flight() < self.setup.workers:
            if not self._start_one():
                break
        self._drain_chats()

    def _walk_ending(self) -> bool:
        """Whether the list pages left to ask are known and at most `ENDING_PAGES`: each
        window's by its density (one for a bounded window not answered yet), each tie's up to
        its last page; unknown while a tie's end or an open window's extent is."""
        left = 0.0
        for tie in self.ties:
            if not tie.finished:
                if tie.last is None:
                    return False
                left += tie.last - len(tie.answered)
        for window in self.plan.windows:
            if not window.splittable:
                continue  # a final pass: the walk is over
            if window.rate is None:
                if window.hi is None:
                    return False
                left += 1
                continue
            end = window.hi if window.hi is not None else max(self.plan.top, window.pos + 1)
            left += max(1.0, window.rate * (end - window.pos) / self.setup.page_size)
        return left <= ENDING_PAGES

    def _ask_tie_page(self, ahead: int) -> bool:
        """Ask a tie's page again, or its next page up to the last known to exist
        (`ahead` 0) or up to its speculative pages beyond (`ahead` 1)."""
        for tie in self.ties:
            if tie.waiting:
                continue
            if tie.queue:
                self._ask_tie(tie, tie.queue.pop(0))
                return True
            if tie.last is None and tie.issued < tie.frontier + ahead * tie.speculative:
                tie.issued += 1
                self._ask_tie(tie, tie.issued)
                return True
        return False

    def _requests_in_flight(self) -> int:
        """Requests out or waiting for the budget."""
        return len(self.inflight)

    def _start_one(self) -> bool:
        if len(self.outbox) >= OUTBOX:
            return False  # the database is behind: read no more pages until it catches up
        # pages known to exist first (a tie's, then a window's next page), pages that may not
        # exist last: a window's continuation waiting behind a tie's speculative pages kept the
        # walk, and so the final pass after it, a second late
        if self._ask_tie_page(ahead=0):
            return True
        window = self.plan.idle() if self.bounds is not None else self._lowest_idle()
        if window is None and self._ask_tie_page(ahead=1):
            return True
        if window is None and not self._top_unknown() and self._budget_has_room():
            window = self.plan.steal()
            self.stolen = self.stolen or window is not None
        if window is None:
            return False
        self._ask_window(window)
        return True

    def _lowest_idle(self) -> Window | None:
        """Until the bounds are proven, only the lowest window is read."""
        lowest = min(self.plan.windows, key=lambda w: w.pos, default=None)
        if lowest is None or lowest.busy:
            return None
        lowest.busy = True
        return lowest

    def _budget_has_room(self) -> bool:
        """A window is split only while no request waits for the rate budget (once requests
        queue for it, another window adds no speed, only a part-page at its end), or while
        fewer than `MIN_WINDOWS` are read: the last pages of a walk go in parallel, not one
        round trip after another in the last window. A second read by id whose end is not
        known yet counts as its pages in flight (at least one), and while one is read nothing
        else is split: it keeps the budget busy by itself (its pages beyond the last known go
        out ahead), so a split beside it only ends in another part-page, taking a start the
        chat batches waiting behind would have used (the catch-up's bulk second)."""
        busy = sum(1 for w in self.plan.windows if w.busy)
        reading = sum(max(1, t.speculative) for t in self.ties if t.last is None and not t.finished)
        if busy + reading < MIN_WINDOWS:
            return True
        if reading:
            return False
        # one split per answer: a request just submitted is not waiting for the budget yet;
        # chat batches waiting behind list reads do not count (a split's page goes first)
        return not self.stolen and self.client.session.limiter.turns.ahead() == 0

    def _top_unknown(self) -> bool:
        """Open windows are not split before the top is known (their end is a guess)."""
        return self.top != "done" and any(w.hi is None for w in self.plan.windows)

    # --- windows ----------------------------------------------------------------------------

    def _ask_window(self, window: Window) -> None:
        bound: dict[str, int] = {"from": window.pos - self.margin}
        if window.hi is not None:
            bound["to"] = window.hi - 1 + self.margin
        asked = (window.pos, window.hi, self.margin)
        self.list_requests += 1
        read = lambda: self._list({"updated_at": bound}, ("updated_at", "asc"), 1)  # noqa: E731
        self._submit(
            read if window.splittable else self._last(read),
            lambda page: self._on_window(window, asked, page),
            # a final pass (not splittable) rarely lists anyone: the last chat batch goes out
            # beside it, not after it (if it lists contacts, they make a batch of their own)
            produces=window.splittable,
        )

    def _on_window(self, window: Window, asked: tuple[int, int | None, int], page: Any) -> None:
        self._first_answer()
        if window not in self.plan.windows:
            return  # the top page proved it read meanwhile
        window.busy = False
        if asked[2] != self.margin:
            return  # asked before the bounds turned out exclusive: ask again
        if page is None:
            self._on_window_204(window)
            return
        window.asks = 0
        if not self.first_ids:
            self.first_ids = ids_of(page.items)  # the newest page drops what this one stored
        self._seen(page.items)
        items: list[dict[str, Any]] = page.items
        self._check_ascending(items, window.pos - self.margin, asked[1], self.margin)
        if self._bounds_exclusive(window, items):
            return
        hi = window.hi
        inside = [i for i in items if window.pos <= updated(i) and (hi is None or updated(i) < hi)]
        fresh = [i for i in inside if int(i["id"]) not in window.boundary]
        low = self.starts.pop(id(window), window.pos)
        last = updated(items[-1])
        window.pages += 1
        if self._ends(page) or (hi is not None and last >= hi):
            self._collect(fresh, (low, hi))
            self.plan.finish(window)
        elif last <= window.pos:
            self._collect(fresh, None if low == window.pos else (low, window.pos))
            self._start_tie(window, [i for i in inside if updated(i) == window.pos])
        else:
            self._collect(fresh, (low, last))
            window.rate = len(items) / max(1, last - max(window.pos, updated(items[0])))
            window.boundary = frozenset(ids_of([i for i in inside if updated(i) == last]))
            # "more follows" speaks of the range asked; a window split meanwhile may hold none
            # (a full page without `next` promised nothing: read on, as the vendor may be
            # a stand-in that never sends `next`; a 204 next is probed, `sync.pull.empty`)
            window.pos, window.promised = last, page.has_next and asked[1] == window.hi
            if self.top == "none" and window.hi is None and self.setup.top_allowed:
                self._ask_top()  # a backlog: learn where it ends, to split it
            heavy = [i for i in inside if updated(i) == last]
            if self.bounds is not None and 2 * len(heavy) >= self.setup.page_size:
                # likely a tie: read it by id now, not a page later (page 1 first: it may be
                # one page only)
                self._start_tie(window, heavy, speculative=0)

    def _first_answer(self) -> None:
        """One request first: an unreachable amoCRM fails one request, not five at once.
        Once its headers are written (the connection is up), or it answered (a transport
        without an HTTP trace), the rest of the preamble (a full resync's newest page and
        events marker, the caller's events and account reads) goes out beside the walk."""
        if self.answered:
            return
        self.answered = True
        self._forget_connection()
        if self.top == "pending":
            self._ask_top()
            self._ask_baseline()
        self.on_answer()

    def _bounds_exclusive(self, window: Window, items: list[dict[str, Any]]) -> bool:
        """Settle the date bounds on the first continuation page (see the module docstring)."""
        if self.bounds is not None or not window.boundary:
            return False
        if updated(items[0]) <= window.pos or window.boundary & ids_of(items):
            self.bounds = "inclusive"
            self.plan.may_split = True
            self._proven(window)
            return False
        log.warning("pull_bounds_exclusive", second=window.pos)
        self.bounds, self.margin = "exclusive", 1
        self.plan.may_split = True
        start, self.first_start = self.first_start, None
        if start is not None:
            self.plan.windows.append(Window(start, start + 1))
        return True

    def _proven(self, window: Window) -> None:
        start, self.first_start = self.first_start, None
        if start is not None:
            self._collect([], (start, start + 1))

    def unproven_start(self, window: Window) -> None:
        """The run's first window, while the bounds are unknown: its first page proves its
        start second read only once they turn out inclusive."""
        self.first_start = window.pos
        self.starts[id(window)] = window.pos + 1
