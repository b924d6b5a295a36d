"""The common ground of the pull's fetch stage: its setup and state, and what every part of it
does (submit a request, list a page, read amoCRM's clock, remember what was listed).

The fetch stage is one class built in layers, each in its own module and each using only the
ones below it: `Stage` (here) → `sync.pull.complete` (pages completed with their chat links and
field definitions, handed to the sink) → `sync.pull.ties` (the newest page; seconds read by id)
→ `sync.pull.tail` (after the windows: the final pass, the tie checks) → `sync.pull.empty` (a
window's 204 proven, not believed) → `sync.pull.fetch` (the loop, and the windows walked by
keyset). Everything runs on one scheduler thread that owns the
plan; the requests run on a pool. The rate budget of the client paces them all, so more workers
never means more than `max_rps`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sync.amo.client import CONTACTS, AmoClient
from sync.amo.pages import Page, date_of, ends_scan, listed
from sync.core.mapping import FieldDef
from sync.logs import get_logger
from sync.pull.sink import ChatLinks, CompletePage
from sync.pull.windows import Plan, Span, Window

log = get_logger("sync.pull.fetch")

SETTLE_S = 2  # lists may lag writes by at most this (amoCRM's clock: see `amo_start`)
SPECULATIVE = 3  # tie pages asked beyond the last one known to exist
TIE_ASKS = 3
TIE_ROUNDS = 3  # rounds showing a tie page's persisting 204 spurious before the run fails
CHAT_BATCH = 250  # contacts a chat-links request names (amoCRM's most per request)
OUTBOX = 2  # complete pages beyond the sink's queue before no new page is asked for (memory)
# while fewer pages than this wait for their chat links or the sink's room, chat batches let
# list reads go first (memory: ~2 MB a page; see `Completion._send_chats`)
CHATS_BEHIND = 8
# when the walk ends (`Fetcher._walk_ending`: the run's list pages left to ask are known and
# this few) chat batches let list reads go first while fewer than `CHATS_BEHIND` + this wait
ENDING_PAGES = 4
MAX_FIELD_REFRESHES = 3
RECENT_LIMIT = 200_000  # versions near "now" remembered for the tie checks


class FiltersIgnored(Exception):
    """amoCRM answered with contacts outside the requested filter."""


def updated(item: Mapping[str, Any]) -> int:
    return int(item.get("updated_at") or 0)


def ids_of(items: Sequence[Mapping[str, Any]]) -> set[int]:
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
    top_id: int = 0  # the highest id its pages listed (the end check: `TieReads._tie_end`)
    empty: set[int] = field(default_factory=set)
    asks: dict[int, int] = field(default_factory=dict)
    rounds: int = 0  # rounds that showed a persisting 204 spurious (`TieReads._tie_spurious`)
    unsent: dict[int, threading.Event] = field(default_factory=dict)  # page → set: given up
    out: dict[int, Future[Any]] = field(default_factory=dict)  # page → its request, unanswered
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
class Waiting:
    """A page waiting for its chat links or for new field definitions."""

    items: list[dict[str, Any]]
    covers: Span | None
    chats: ChatLinks | None = None
    chats_due: int = 0  # chat batches holding some of its contacts, not answered yet
    listed: bool = True
    # the definitions that knew every field and enum of its contacts when it was read (the
    # flush asks `unknown_fields` again only if the run's definitions changed since)
    known: Mapping[int, FieldDef] | None = None


@dataclass
class FetchSetup:
    """What the fetch stage of one run needs to know."""

    with_: Sequence[str]
    page_size: int
    workers: int
    ceiling: int  # R: the run's start by our clock
    chats: bool
    new_chats_only: bool  # incremental: chat links only for versions not stored yet
    # the daemon's poll: a 204 is proven only once the run lists something at or above `cursor`
    # (else its cursor stays and nothing is claimed: `sync.pull.empty`)
    lazy_empty: bool
    bounds: str | None  # "inclusive" / "exclusive" once proven, else None
    top_at_start: bool  # a full resync reads the newest page at once
    top_allowed: bool  # False: the account is known to fit in two pages (no newest page)
    final_pass: bool  # a full resync or a CLI pull: a final pass from amoCRM's run start last
    # our clock: the final pass from the run's start goes out no earlier (lists lag writes by up
    # to SETTLE_S; the run's start plus SETTLE_S, a duration, so no clock skew enters it)
    settle_until: float
    now: Callable[[], float]  # our clock, unix seconds (to compare with amoCRM's `Date`)
    cursor: int = 0  # the old cursor: a run listing nothing at or above it leaves it there


class Stage:
    """The fetch stage's state and its primitives (see the module docstring)."""

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
        self.answered = False  # nothing else is asked before the connection is up
        self.connected: Future[None] | None = None  # resolved once a request's headers are out
        self.first_ids: set[int] = set()
        self.margin = 1 if setup.bounds == "exclusive" else 0
        self.bounds = setup.bounds
        self.inflight: dict[Future[Any], Callable[[Any], None]] = {}
        self.stolen = False  # a window was split in this dispatch
        self.ending = False  # few list pages left to ask (`Fetcher._walk_ending`)
        self.producers: set[Future[Any]] = set()  # requests whose answer may list contacts
        self.chat_batch: list[tuple[Waiting, list[int]]] = []  # contacts whose links to ask
        self.chat_batched = 0  # contacts in `chat_batch`
        self.waiting: list[Waiting] = []
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
        self.unproven: list[Window] = []  # answered 204 while nothing was listed (lazy_empty)
        self.beside: dict[int, Any] = {}  # id(final pass) → the newest page asked beside it
        self.starts: dict[int, int] = {}  # id(window) → the start second of an unproven first page
        self.list_requests = 0
        self.next_sent = False  # a list page had `next`: a tie's page 2 may be asked ahead
        self.skew: float | None = None
        self._skew_lock = threading.Lock()
        self.first_start: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        plan.may_split = self.bounds is not None

    def _submit(
        self, job: Callable[[], Any], then: Callable[[Any], None], *, produces: bool = False
    ) -> Future[Any]:
        """Run `job` on the pool and `then(result)` on this thread. `produces`: its answer may
        list contacts (a window, a tie's page, the newest page, a re-read), so a chat batch
        may still grow while it is in flight."""
        assert self._pool is not None
        future = self._pool.submit(job)
        self.inflight[future] = then
        if produces:
            self.producers.add(future)
        return future

    def _last(self, job: Callable[[], Any]) -> Callable[[], Any]:
        """`job` (a read after the walk: the final pass, the deletion check) waiting for its
        start behind the chat batches waiting for theirs (`Completion._few_held`)."""
        turns = self.client.session.limiter.turns

        def behind() -> Any:
            with turns.behind():
                return job()

        return behind

    def _hand_on(self) -> None:
        """Pages to the sink while it has room; the walk waits while it has none (memory)."""
        while self.outbox and self.offer(self.outbox[0]):
            self.outbox.popleft()

    def _list(self, filters: Mapping[str, Any] | None, order: tuple[str, str], page: int) -> Any:
        params: dict[str, Any] = {"filter": filters or None, "order": {order[0]: order[1]}}
        params.update(page=page, limit=self.setup.page_size)
        if self.setup.with_:
            params["with"] = list(self.setup.with_)
        reply = self.client.get(CONTACTS, params)
        self._clock_sample(reply.headers)
        listing = listed(page, reply, "contacts")  # None: nothing listed (204, or an empty 200)
        if listing is not None and listing.has_next:
            self.next_sent = True
        return listing

    def _ends(self, page: Page) -> bool:
        """Whether a page ends its read (`sync.amo.pages.ends_scan`): no `next` and not full; a
        full page is read on even after pages that had `next` (a server may leave it out of
        some pages only)."""
        return ends_scan(page, self.setup.page_size)

    def _clock_sample(self, headers: Mapping[str, str]) -> None:
        """amoCRM's `Date` less our clock when we read it is at most how far amoCRM's clock
        is ahead of ours; the largest such sample is the best lower bound (see `amo_start`)."""
        stamp = date_of(headers)
        if stamp is None:
            return
        sample = stamp - self.setup.now()
        with self._skew_lock:
            if self.skew is None or sample > self.skew:
                self.skew = sample

    def amo_start(self) -> int:
        """A lower bound of amoCRM's clock when the run began: our start R moved by the skew
        amoCRM's `Date` headers showed (R itself when no answer carried one)."""
        return self.setup.ceiling + math.floor(self.skew or 0.0)

    def _seen(self, items: list[dict[str, Any]]) -> None:
        self.listings += 1
        floor = self.amo_start() - SETTLE_S
        for item in items:
            at = updated(item)
            if self.newest is None or at > self.newest:
                self.newest = at
            if at >= floor:
                cid = int(item["id"])
                if self.recent.get(cid, (None, 0))[0] != at:
                    self.recent[cid] = (at, self.listings)
