"""The fetch stage of the pull pipeline: windows walked in parallel, ties, chats, definitions.

`Fetcher.run()` walks the `Plan`'s windows (`sync.pull.windows`) with up to `workers` requests
in flight and hands every page to `emit` complete — its contacts, their chat links, any custom
field definitions it needs that the run did not know, and the span of seconds it proves read.
Everything runs on one scheduler thread that owns the plan; the requests run on a pool. The rate
budget of the client paces them all, so more workers never means more than `max_rps`.

**A window** `[pos, hi)` is read by keyset: page 1 of `filter[updated_at][from]=pos&[to]=hi-1`,
`order[updated_at]=asc`. A full page whose last contact is at second U proves `[pos, U)` read;
the next request starts at U (its contacts come again and are dropped by id). A page that is not
full proves `[pos, hi)`. Nothing is addressed by position, so a deletion, restore or edit during
the walk cannot shift a contact out of view. A free worker splits the window with the most left
(`Plan.steal`); a window split while its request is in flight keeps only what falls below the
split. The first window of a run must prove amoCRM's date bounds inclusive (a continuation page
lists the boundary second again) before anything is split; if they are exclusive, every request
asks one second wider from then on and the first window's start second is read again.

**The top.** A full resync, and an incremental run whose first page is full (a backlog), also
read the newest page (`order[updated_at]=desc`, no filter): it proves everything above its lowest
second U read, bounds the open window at U + 1 for splitting, and tells the run amoCRM's newest
time before any tie is read.

**Ties.** A full page all in one second U (more contacts in it than a page holds) is read by id:
`filter[updated_at][from]=U&[to]=U&order[id]=asc`, pages 1, 2, … several in flight (at most
`SPECULATIVE` beyond the last page known to exist). Pages addressed by number can shift when a
contact leaves U during the read, so every tie records `theta` (amoCRM's newest time known when
its read began) and the listing sequence number; after the walk, the final pass (`final`) lists
everything from min(theta) on. A tie is re-read (`verify`, pages from the last to the first, one
at a time: a contact leaving U then only shifts unread contacts towards unread pages) when a
version with `updated_at` ≥ theta was first listed after its read began, or a deletion is listed
that was not before (`deleted_since`). See docs/pull.md for the whole argument.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from sync.amo.client import CONTACTS, AmoClient
from sync.amo.pages import Page, parse_page
from sync.core.mapping import FieldDef, chat_rows, field_def, unknown_fields
from sync.errors import InvariantError
from sync.logs import get_logger
from sync.pull.sink import ChatLinks, CompletePage
from sync.pull.windows import Plan, Span, Window, subtract

log = get_logger("sync.pull.fetch")

SETTLE_S = 2  # lists may lag writes by at most this (amoCRM's clock: see `amo_start`)
SPECULATIVE = 3  # tie pages asked beyond the last one known to exist
PROMISED_ASKS = 4  # a 204 where the previous page said more follows is asked this often
TIE_ASKS = 3
OUTBOX = 2  # complete pages beyond the sink's queue before no new page is asked for (memory)
MAX_FIELD_REFRESHES = 3
RECENT_LIMIT = 200_000  # versions near "now" remembered for the tie checks


class FiltersIgnored(Exception):
    """amoCRM answered with contacts outside the requested filter."""


def _u(item: Mapping[str, Any]) -> int:
    return int(item.get("updated_at") or 0)


def _ids(items: Sequence[Mapping[str, Any]]) -> set[int]:
    return {int(i["id"]) for i in items}


@dataclass
class Tie:
    """The read by id of one second with more contacts than a page."""

    second: int
    window: Window
    known: set[int]  # ids of that second stored already (the page that found it)
    theta: int = 0
    started: int = 0
    frontier: int = 1  # the highest page known to exist
    issued: int = 0
    queue: list[int] = field(default_factory=list)  # page numbers to (re)ask
    answered: dict[int, bool] = field(default_factory=dict)  # page with data → has_next
    empty: set[int] = field(default_factory=set)
    asks: dict[int, int] = field(default_factory=dict)
    last: int | None = None
    ids: set[int] = field(default_factory=set)
    speculative: int = SPECULATIVE  # pages asked beyond the last known to exist
    waiting: bool = True  # for the events listed before it
    verified: bool = False
    finished: bool = False
    checked: bool = False  # a final pass and a deletion check began after its read
    deleted: bool = False  # a deletion was listed that its read may have missed

    def complete(self) -> bool:
        return self.last is not None and all(p in self.answered for p in range(1, self.last + 1))


@dataclass
class _Waiting:
    """A page waiting for its chat links or for new field definitions."""

    items: list[dict[str, Any]]
    covers: Span | None
    chats: ChatLinks | None = None
    chats_due: bool = False
    listed: bool = True


@dataclass
class FetchSetup:
    """What the fetch stage of one run needs to know."""

    with_: Sequence[str]
    page_size: int
    workers: int
    ceiling: int  # R: the run's start by our clock
    chats: bool
    new_chats_only: bool  # incremental: chat links only for versions not stored yet
    first_attempts: int  # a 204 on a run's first window is asked this often
    bounds: str | None  # "inclusive" / "exclusive" once proven, else None
    top_at_start: bool  # a full resync reads the newest page at once
    top_allowed: bool  # False: the account is known to fit in two pages (no newest page)
    final_pass: bool  # a full resync: a final pass from amoCRM's run start after every window
    now: Callable[[], float]  # our clock, unix seconds (to compare with amoCRM's `Date`)


class Fetcher:
    """One run's fetch stage (see the module docstring)."""

    def __init__(
        self,
        client: AmoClient,
        setup: FetchSetup,
        plan: Plan,
        fields: dict[int, FieldDef],
        *,
        stamp: Callable[[CompletePage], CompletePage],
        offer: Callable[[CompletePage], bool],
        stored_versions: Callable[[list[int]], dict[int, int]],
        baseline: Callable[[], None],
        deleted_since: Callable[[int], bool],
        stop: threading.Event,
        filters_off: Callable[[], bool],
        answered: Callable[[], None],
    ) -> None:
        self.client, self.setup, self.plan, self.fields = client, setup, plan, fields
        self.stamp, self.offer, self.stored_versions = stamp, offer, stored_versions
        self.outbox: deque[CompletePage] = deque()  # complete pages the sink has no room for
        self.baseline, self.deleted_since, self.stop = baseline, deleted_since, stop
        self.filters_off, self.on_answer = filters_off, answered
        self.answered = False  # nothing else is asked before amoCRM answered once
        self.first_ids: set[int] = set()
        self.margin = 1 if setup.bounds == "exclusive" else 0
        self.bounds = setup.bounds
        self.inflight: dict[Future[Any], Callable[[Any], None]] = {}
        self.waiting: list[_Waiting] = []
        self.ties: list[Tie] = []
        self.newest: int | None = None  # newest updated_at listed
        self.listings = 0  # list answers so far (the order in which versions were first seen)
        self.recent: dict[int, tuple[int, int]] = {}  # id → (updated_at, first listing)
        self.top = "pending" if setup.top_at_start else "none"  # none / pending / asked / done
        self.fields_refreshing = False
        self.field_refreshes = 0
        self.new_fields: list[dict[str, Any]] | None = None
        self.baseline_state = "none"  # none / asked / done
        self.full_tail = False
        self.reread_from: int | None = None
        self.starts: dict[int, int] = {}  # id(window) → the start second of an unproven first page
        self.list_requests = 0
        self.skew: float | None = None
        self._skew_lock = threading.Lock()
        self.first_start: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        plan.may_split = self.bounds is not None

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Walk until every window, tie and page is done; raise the first failure."""
        pool = ThreadPoolExecutor(self.setup.workers + 2, thread_name_prefix="pull-fetch")
        self._pool = pool
        try:
            for window in self.plan.windows:
                window.busy = False
            while True:
                if self.stop.is_set():
                    raise InvariantError("the pull stopped: its database end failed")
                self._hand_on()
                self._dispatch()
                if self.answered and self.filters_off():  # asked once amoCRM answered
                    raise FiltersIgnored("the account has API filtering off")
                if not self.inflight:
                    if self.outbox:
                        self.stop.wait(0.02)
                        continue
                    if self._next_phase():
                        continue
                    return
                pause = 0.02 if self.outbox else None
                done, _ = wait(list(self.inflight), timeout=pause, return_when=FIRST_COMPLETED)
                for future in done:
                    handler = self.inflight.pop(future)
                    handler(future.result())
        finally:
            for future in self.inflight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        assert self._pool is not None
        self.inflight[self._pool.submit(job)] = then

    def _dispatch(self) -> None:
        self._release_ties()
        self._early_tail()
        while self._requests_in_flight() < self.setup.workers:
            if not self._start_one():
                return

    def _requests_in_flight(self) -> int:
        return len(self.inflight)

    def _hand_on(self) -> None:
        """Pages to the sink while it has room; the walk waits while it has none (memory)."""
        while self.outbox and self.offer(self.outbox[0]):
            self.outbox.popleft()

    def _start_one(self) -> bool:
        if len(self.outbox) >= OUTBOX:
            return False  # the database is behind: read no more pages until it catches up
        for tie in self.ties:
            if not tie.waiting and tie.queue:
                number = tie.queue.pop(0)
                self._ask_tie(tie, number)
                return True
            if not tie.waiting and tie.last is None and tie.issued < tie.frontier + tie.speculative:
                tie.issued += 1
                self._ask_tie(tie, tie.issued)
                return True
        window = self.plan.idle() if self.bounds is not None else self._lowest_idle()
        if window is None and not self._top_unknown():
            window = self.plan.steal()
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

    def _top_unknown(self) -> bool:
        """Open windows are not split before the top is known (their end is a guess)."""
        return self.top != "done" and any(w.hi is None for w in self.plan.windows)

    # --- windows ----------------------------------------------------------------------------

    def _list(self, filters: Mapping[str, Any] | None, order: tuple[str, str], page: int) -> Any:
        params: dict[str, Any] = {"filter": filters or None, "order": {order[0]: order[1]}}
        params.update(page=page, limit=self.setup.page_size)
        if self.setup.with_:
            params["with"] = list(self.setup.with_)
        reply = self.client.get(CONTACTS, params)
        self._clock_sample(reply.headers)
        return None if reply.data is None else parse_page(page, reply, "contacts")

    def _clock_sample(self, headers: Mapping[str, str]) -> None:
        """amoCRM's `Date` less our clock when we read it is at most how far amoCRM's clock
        is ahead of ours; the largest such sample is the best lower bound (see `amo_start`)."""
        raw = headers.get("date") or headers.get("Date")
        if not raw:
            return
        try:
            stamp = parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return
        sample = stamp - self.setup.now()
        with self._skew_lock:
            if self.skew is None or sample > self.skew:
                self.skew = sample

    def amo_start(self) -> int:
        """A lower bound of amoCRM's clock when the run began: our start R moved by the skew
        amoCRM's `Date` headers showed (R itself when no answer carried one)."""
        return self.setup.ceiling + math.floor(self.skew or 0.0)

    def _ask_window(self, window: Window) -> None:
        bound: dict[str, int] = {"from": window.pos - self.margin}
        if window.hi is not None:
            bound["to"] = window.hi - 1 + self.margin
        asked = (window.pos, window.hi, self.margin)
        self.list_requests += 1
        self._submit(
            lambda: self._list({"updated_at": bound}, ("updated_at", "asc"), 1),
            lambda page: self._on_window(window, asked, page),
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
            self.first_ids = _ids(page.items)  # the newest page drops what this one stored
        self._seen(page.items)
        items: list[dict[str, Any]] = page.items
        self._check_ascending(items, window.pos - self.margin, asked[1], self.margin)
        if self._bounds_exclusive(window, items):
            return
        hi = window.hi
        inside = [i for i in items if window.pos <= _u(i) and (hi is None or _u(i) < hi)]
        fresh = [i for i in inside if int(i["id"]) not in window.boundary]
        low = self.starts.pop(id(window), window.pos)
        last = _u(items[-1])
        window.pages += 1
        if not page.has_next or (hi is not None and last >= hi):
            self._collect(fresh, (low, hi))
            self.plan.finish(window)
        elif last <= window.pos:
            self._collect(fresh, None if low == window.pos else (low, window.pos))
            self._start_tie(window, [i for i in inside if _u(i) == window.pos])
        else:
            self._collect(fresh, (low, last))
            window.rate = len(items) / max(1, last - max(window.pos, _u(items[0])))
            window.boundary = frozenset(_ids([i for i in inside if _u(i) == last]))
            # "more follows" speaks of the range asked; a window split meanwhile may hold none
            window.pos, window.promised = last, asked[1] == window.hi
            if self.top == "none" and window.hi is None and self.setup.top_allowed:
                self._ask_top()  # a backlog: learn where it ends, to split it
            heavy = [i for i in inside if _u(i) == last]
            if self.bounds is not None and 2 * len(heavy) >= self.setup.page_size:
                # likely a tie: read it by id now, not a page later (page 1 first: it may be
                # one page only)
                self._start_tie(window, heavy, speculative=0)

    def _first_answer(self) -> None:
        """One request first: an unreachable amoCRM fails one request, not five at once.
        Then the rest of the preamble (a full resync's newest page and events marker, the
        caller's events and account reads) goes out beside the walk."""
        if self.answered:
            return
        self.answered = True
        if self.top == "pending":
            self._ask_top()
            self._ask_baseline()
        self.on_answer()

    def _on_window_204(self, window: Window) -> None:
        window.asks += 1
        if window.promised:
            limit = PROMISED_ASKS
        elif window.pages == 0:
            limit = window.first
        else:
            limit = 2
        if window.asks < limit:
            return  # asked again at the next dispatch
        if window.promised:  # deleted meanwhile (a spurious 204 does not persist): believed
            log.warning("pull_window_emptied", second=window.pos, asked=window.asks)
        low = self.starts.pop(id(window), window.pos)
        self._collect([], (low, window.hi))
        self.plan.finish(window)

    @staticmethod
    def _check_ascending(
        items: list[dict[str, Any]], low: int, hi: int | None, margin: int
    ) -> None:
        stamps = [_u(i) for i in items]
        if stamps[0] < low or stamps != sorted(stamps):
            raise FiltersIgnored(f"asked from {low}, got updated_at {stamps[0]}")
        if hi is not None and stamps[0] > hi - 1 + margin:
            raise FiltersIgnored(f"asked below {hi}, got updated_at {stamps[0]}")

    def _bounds_exclusive(self, window: Window, items: list[dict[str, Any]]) -> bool:
        """Settle the date bounds on the first continuation page (see the module docstring)."""
        if self.bounds is not None or not window.boundary:
            return False
        if _u(items[0]) <= window.pos or window.boundary & _ids(items):
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

    # --- the top page -----------------------------------------------------------------------

    def _ask_top(self) -> None:
        self.top = "asked"
        self.list_requests += 1
        self._submit(lambda: self._list(None, ("updated_at", "desc"), 1), self._on_top)

    def _on_top(self, page: Page | None) -> None:
        self.top = "done"
        if page is None:
            return  # an empty account, or a spurious 204: the windows read everything anyway
        self._seen(page.items)
        stamps = [_u(i) for i in page.items]
        if stamps != sorted(stamps, reverse=True):
            raise FiltersIgnored("amoCRM ignored order[updated_at]=desc")
        low = stamps[-1]
        if not page.has_next:  # the whole account in one page
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

    def _start_tie(
        self, window: Window, found: list[dict[str, Any]], speculative: int = SPECULATIVE
    ) -> None:
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
        tie = Tie(window.pos, window, known=_ids(found), speculative=speculative)
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
        self.list_requests += 1
        self._submit(
            lambda: self._list(self._tie_filter(tie.second), ("id", "asc"), number),
            lambda page: self._on_tie(tie, number, page),
        )

    def _on_tie(self, tie: Tie, number: int, page: Page | None) -> None:
        if page is None:
            self._on_tie_204(tie, number)
        else:
            self._seen(page.items)
            mine = self._tie_items(tie, page.items)
            tie.answered[number] = page.has_next
            tie.empty.discard(number)
            if page.has_next:
                tie.frontier = max(tie.frontier, number + 1)
                tie.speculative = SPECULATIVE  # more than a page after all
                if number + 1 in tie.empty:  # it exists after all: ask again
                    tie.empty.discard(number + 1)
                    tie.queue.append(number + 1)
            else:
                tie.last = number if tie.last is None else max(tie.last, number)
            fresh = [i for i in mine if int(i["id"]) not in tie.known | tie.ids]
            tie.ids.update(_ids(mine))
            self._collect(fresh, None)
        if tie.complete():
            self._tie_done(tie)

    def _on_tie_204(self, tie: Tie, number: int) -> None:
        tie.asks[number] = tie.asks.get(number, 0) + 1
        if number <= tie.frontier and tie.answered.get(number - 1, True):
            if tie.asks[number] >= TIE_ASKS:
                raise InvariantError(f"amoCRM keeps answering 204 for the contacts of {tie.second}")
            tie.queue.append(number)
            return
        tie.empty.add(number)
        if tie.last is None and number - 1 in tie.answered and not tie.answered[number - 1]:
            tie.last = number - 1

    def _tie_items(self, tie: Tie, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stamps = [_u(i) for i in items]
        if min(stamps) < tie.second - self.margin or max(stamps) > tie.second + self.margin:
            raise FiltersIgnored(f"asked {tie.second}, got {min(stamps)}..{max(stamps)}")
        return [i for i in items if _u(i) == tie.second]

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

    # --- after the walk ---------------------------------------------------------------------

    def _next_phase(self) -> bool:
        """What comes when nothing is in flight; False when the run's reading is over."""
        if self.waiting:
            raise InvariantError("pull: pages left waiting with nothing in flight")
        if self.setup.final_pass and not self.full_tail:
            self.full_tail = True  # a full resync: the final pass after every window
            self._tail([t for t in self.ties if not t.checked], self.amo_start() - SETTLE_S)
            return True
        unchecked = [t for t in self.ties if not t.checked]
        if unchecked:
            self._tail(unchecked, None)
            return True
        shaken = [t for t in self.ties if not t.verified and self._shaken(t)]
        if shaken:
            for tie in shaken:
                tie.verified = True
            self._submit(lambda: self._verify_all(shaken), self._on_verified)
            self.reread_from = min(t.theta for t in shaken)
            return True
        if self.reread_from is not None:  # after a re-read: what changed meanwhile, stored
            self._final_pass(self.reread_from, self.setup.first_attempts)
            self.reread_from = None
            return True
        for tie in self.ties:
            self._collect([], (tie.second, tie.second + 1))
        return False

    def _early_tail(self) -> None:
        """An incremental run checks its ties as soon as they are all read, beside the rest."""
        if self.setup.final_pass or not self.ties:
            return
        if all(t.finished and not t.checked for t in self.ties):
            self._tail(self.ties, None)

    def _tail(self, ties: list[Tie], start: int | None) -> None:
        """The final pass (everything from the lowest theta, or `start`, to the end, listed after
        the ties were read) and, beside it, the check for deletions since."""
        starts = [t.theta for t in ties] + ([] if start is None else [start])
        self._final_pass(min(starts), 1)  # a 204 here is believed, as for any split window
        for tie in ties:
            tie.checked = True
        if ties:
            theta = min(t.theta for t in ties)
            self._submit(lambda: self.deleted_since(theta), lambda gone: self._deleted(ties, gone))

    @staticmethod
    def _deleted(ties: list[Tie], gone: bool) -> None:
        for tie in ties:
            tie.deleted = gone

    def _final_pass(self, start: int, first: int) -> None:
        """Everything from `start` on, by keyset to the end; seconds read by id are left out."""
        read = [(t.second, t.second + 1) for t in self.ties]
        for lo, hi in subtract([(start, None)], read):
            self.plan.windows.append(Window(lo, hi, first=first, splittable=False))

    def _shaken(self, tie: Tie) -> bool:
        """Whether something changed while the tie was read that could have shifted its pages."""
        if tie.deleted or len(self.recent) >= RECENT_LIMIT:
            return True
        # a contact that left U has a version after U (one still at U did not leave it)
        return any(
            at >= tie.theta and at != tie.second and seen > tie.started
            for at, seen in self.recent.values()
        )

    def _verify_all(self, ties: list[Tie]) -> list[tuple[Tie, list[dict[str, Any]]]]:
        return [(tie, self._verify(tie)) for tie in ties]

    def _verify(self, tie: Tie) -> list[dict[str, Any]]:
        """Second U again, its pages from the last to the first, one at a time."""
        log.warning("pull_tie_reverified", second=tie.second)
        size = self.setup.page_size
        top = max(1, -(-len(tie.ids | tie.known) // size))
        items: list[dict[str, Any]] = []
        number = top
        while True:  # a second that grew (not settled yet): read upwards first
            page = self._list(self._tie_filter(tie.second), ("id", "asc"), number)
            self.list_requests += 1
            if page is None or not page.has_next:
                break
            number += 1
        if page is not None:
            items += page.items
        for lower in range(number - 1, 0, -1):
            page = self._list(self._tie_filter(tie.second), ("id", "asc"), lower)
            self.list_requests += 1
            if page is not None:
                items += page.items
        return items

    def _on_verified(self, results: list[tuple[Tie, list[dict[str, Any]]]]) -> None:
        for tie, items in results:
            self._seen(items)
            self._collect(self._tie_items(tie, items) if items else [], None)

    # --- completing pages -------------------------------------------------------------------

    def _seen(self, items: list[dict[str, Any]]) -> None:
        self.listings += 1
        floor = self.amo_start() - SETTLE_S
        for item in items:
            at = _u(item)
            if self.newest is None or at > self.newest:
                self.newest = at
            if at >= floor:
                cid = int(item["id"])
                if self.recent.get(cid, (None, 0))[0] != at:
                    self.recent[cid] = (at, self.listings)

    def _collect(self, items: list[dict[str, Any]], covers: Span | None) -> None:
        """A page read: fetch what it still needs, then hand it on."""
        waiting = _Waiting(items, covers)
        self.waiting.append(waiting)
        if items and self.setup.chats:
            waiting.chats_due = True
            self._submit(lambda: self._chats(items), lambda c: self._chats_in(waiting, c))
        if items and unknown_fields(items, self.fields) and not self.fields_refreshing:
            self._refresh_fields()
        self._flush()

    def _chats(self, items: list[dict[str, Any]]) -> ChatLinks:
        ids = [int(i["id"]) for i in items]
        if self.setup.new_chats_only:
            stored = self.stored_versions(ids)
            ids = [int(i["id"]) for i in items if stored.get(int(i["id"])) != _u(i)]
        links: list[dict[str, Any]] = []
        if ids:
            for page in self.client.iter_chats(contact_ids=ids):
                links += page.items
        return ChatLinks(ids, chat_rows(links))

    def _chats_in(self, waiting: _Waiting, chats: ChatLinks) -> None:
        waiting.chats, waiting.chats_due = chats, False
        self._flush()

    def _refresh_fields(self) -> None:
        if self.field_refreshes >= MAX_FIELD_REFRESHES:
            return
        self.field_refreshes += 1
        self.fields_refreshing = True
        self._submit(self._fetch_fields, self._fields_in)

    def _fetch_fields(self) -> list[dict[str, Any]]:
        raw: list[dict[str, Any]] = []
        for page in self.client.iter_custom_fields():
            raw += page.items
        return raw

    def _fields_in(self, raw: list[dict[str, Any]]) -> None:
        self.fields_refreshing = False
        self.fields = {f.id: f for f in map(field_def, raw)}
        self.new_fields = raw
        log.info("pull_fields_refreshed", fields=len(self.fields))
        self._flush()

    def _flush(self) -> None:
        """Hand on every page that has all it needs (pages need not go in order)."""
        if self.fields_refreshing:
            return
        ready = [w for w in self.waiting if not w.chats_due]
        if not ready:
            return
        self.waiting = [w for w in self.waiting if w.chats_due]
        for waiting in ready:
            stale = waiting.items and unknown_fields(waiting.items, self.fields)
            if stale and self.field_refreshes < MAX_FIELD_REFRESHES:
                self.waiting.append(waiting)
                self._refresh_fields()
                continue
            new, self.new_fields = self.new_fields, None
            page = CompletePage(
                waiting.items,
                self.fields,
                chats=waiting.chats,
                new_fields=new,
                covers=waiting.covers,
                listed=waiting.listed,
            )
            self.outbox.append(self.stamp(page))
        self._hand_on()


def complete_now(
    client: AmoClient,
    setup: FetchSetup,
    fields: dict[int, FieldDef],
    items: list[dict[str, Any]],
    *,
    stored_versions: Callable[[list[int]], dict[int, int]],
    listed: bool = False,
) -> tuple[CompletePage, dict[int, FieldDef]]:
    """A page made complete right here (contacts read by id, the fallback walks): its chat links
    and, if it names a field the run does not know, the definitions. Returns the page and the
    definitions to use from now on."""
    new_fields: list[dict[str, Any]] | None = None
    if items and unknown_fields(items, fields):
        new_fields = [f for page in client.iter_custom_fields() for f in page.items]
        fields = {f.id: f for f in map(field_def, new_fields)}
    chats: ChatLinks | None = None
    if items and setup.chats:
        ids = [int(i["id"]) for i in items]
        if setup.new_chats_only:
            stored = stored_versions(ids)
            ids = [int(i["id"]) for i in items if stored.get(int(i["id"])) != _u(i)]
        links = [x for page in client.iter_chats(contact_ids=ids) for x in page.items]
        chats = ChatLinks(ids, chat_rows(links))
    page = CompletePage(items, fields, chats=chats, new_fields=new_fields, listed=listed)
    return page, fields
