"""The fetch stage's proof that a window is empty: a 204 alone never ends a range.

amoCRM answers 204 for an empty list, and also, now and then, for a page that is not empty
(amocrm-api.md §2, §11.4: spurious mid-scan 204s). Asking again only makes a wrong belief less
likely; a 204 on a window `[pos, hi)` is instead followed by a **probe** whose contents prove the
range empty or show that the 204 was spurious:

* a bounded window: page 1 of `filter[updated_at][from]=pos` (no upper bound), ascending. If it
  lists no contact of `[pos, hi)` that the window has not read (its boundary second's contacts
  were listed by the page before) and reaches `hi` or its end, the range is empty; if it lists
  one, the window is asked again.
* an open window, or a bounded one whose probe answered 204: the newest page (`order[updated_at]
  =desc`, no filter). Its newest contact below `pos` proves `[pos, ∞)` empty; one at or above
  `pos` means the 204 was spurious (or a contact was written since): the window is asked again.
  A non-empty account never answers it with a genuine 204; `EMPTY_ASKS` 204s in a row (a short
  pause before each) are taken for an account with no contacts.

The probe is answered after the 204 and so proves the range empty at a moment of the run (after
the final pass was sent, for the final pass): case 1 of docs/pull.md's argument needs no more.
A round that does not prove the range asks the window again; after `MAX_ROUNDS` the run fails.
A final pass (usually empty) asks the newest page first: a page whose lowest contact is below
the pass's start lists all of it, and the keyset request is not sent (when the walk saw many
versions that new, both go out at once and the page proves the pass's 204). Cost: one request
per window that is really empty (two when its probe answers 204); a final pass costs one
request, two if more than a page changed since its start (then a round trip more at the end);
none where a window lists contacts. The daemon's poll (`lazy_empty`) proves nothing while the
run has listed nothing at or above its old cursor (`_moves_nothing`): its cursor then stays
where it was, so a spurious 204 costs nothing, and an idle poll stays one request (two while a
settled tie second lies in the overlap: a window on each side of it; one more for each further
settled second there); once anything is listed there, the windows it believed are probed at
the end.

A tie (`sync.pull.ties`) whose page keeps answering 204 is probed the same way for its second U
alone (`_check_emptied`): page 1 from U ascending that lists no contact at U the run has not read
and reaches past U or its end, or else the newest page below U, proves U emptied (a bulk edit
moved it on); anything else shows the 204 spurious, and the page is asked again, `TIE_ROUNDS`
probes at most before the run fails. A 204, or an empty answer by id, never proves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.errors import InvariantError
from sync.pull.stage import FiltersIgnored, Tie, log, updated
from sync.pull.tail import AfterWalk
from sync.pull.windows import Window

EMPTY_ASKS = 6  # 204s in a row on the newest page before the account is taken as empty
EMPTY_PAUSE_S = 0.2  # before the newest page is asked again after a 204
MAX_ROUNDS = 8  # 204s on a window that no probe explains before the run fails
PENDING, AWAITED = object(), object()  # the newest page beside a final pass: not answered yet


class EmptyProof(AfterWalk):
    """Windows answered 204 (see the module docstring)."""

    def _on_window_204(self, window: Window) -> None:
        window.asks += 1
        window.rate = None  # not split while it is probed: it is likely empty
        if window.asks > MAX_ROUNDS:
            raise InvariantError(
                f"amoCRM keeps answering 204 for contacts updated from {window.pos}"
                f" to {window.hi} though other reads list contacts there"
            )
        if self.setup.lazy_empty and self._moves_nothing() and window.splittable:
            self.plan.finish(window)  # proven at the end if the run lists anything after all
            self.unproven.append(window)
            return
        if id(window) in self.beside:  # a final pass: its newest page went out beside it
            answer = self.beside.pop(id(window))
            window.busy = True
            if answer is PENDING:
                self.beside[id(window)] = AWAITED
            else:
                self._on_probe_top(window, answer)
            return
        self._probe(window)

    def _final_pass(self, start: int) -> None:
        """The final pass. Its open window is usually empty or nearly so, and the newest page
        (`order[updated_at]=desc`, no filter) then lists everything in it: when that page's
        lowest contact is below the window's start (or the page is the account's last), it
        proves the window read and the keyset request is not sent (one request less at the end
        of every full resync and CLI pull). Otherwise the window is read by keyset after it.
        Where the walk has already listed half a page of versions from `start` on (an account
        edited while it is read), the window and the newest page go out at the same moment
        instead, and the page proves the window's 204 (as good a proof as one sent after it,
        without a round trip at the end). Either way the page is sent after every window
        answered and the settle wait, when the keyset read would have been."""
        before = set(map(id, self.plan.windows))
        super()._final_pass(start)
        recent = sum(1 for at, _ in self.recent.values() if at >= start)
        both = 2 * recent >= self.setup.page_size
        for window in self.plan.windows:
            if id(window) in before or window.hi is not None:
                continue
            self.list_requests += 1
            if both:
                self.beside[id(window)] = PENDING
                then = self._beside_of(window)
            else:
                window.busy = True  # held until the newest page shows whether it is needed
                then = self._covering(window)
            self._submit(self._last(lambda: self._list(None, ("updated_at", "desc"), 1)), then)

    def _covering(self, window: Window) -> Callable[[Any], None]:
        return lambda page: self._on_covering(window, page)

    def _on_covering(self, window: Window, page: Any) -> None:
        """The newest page asked before a final pass's open window `[pos, ∞)`: it lists every
        contact from `pos` on if its lowest contact is below `pos` (a descending page holds all
        that is newer than its last one) or it ends the list; else (or a 204) the window is read
        by keyset, and a 204 there is probed as any window's."""
        if window not in self.plan.windows:
            return
        window.busy = False
        if page is None:
            return
        self._seen(page.items)
        stamps = [updated(i) for i in page.items]
        if stamps != sorted(stamps, reverse=True):
            raise FiltersIgnored("amoCRM ignored order[updated_at]=desc")
        if stamps[-1] >= window.pos and not self._ends(page):
            return
        low = self.starts.pop(id(window), window.pos)
        self._collect([i for i in page.items if updated(i) >= window.pos], (low, None))
        self.plan.finish(window)

    def _beside_of(self, window: Window) -> Callable[[Any], None]:
        return lambda page: self._on_beside(window, page)

    def _on_beside(self, window: Window, page: Any) -> None:
        if self.beside.get(id(window)) is AWAITED:  # the final pass answered 204 first
            del self.beside[id(window)]
            self._on_probe_top(window, page)
        elif window in self.plan.windows:
            self.beside[id(window)] = page  # for a 204 still to come
        else:
            self.beside.pop(id(window), None)

    def _next_phase(self) -> bool:
        if self.unproven:
            windows, self.unproven = self.unproven, []
            for window in windows:
                if self._moves_nothing():  # the cursor stays, nothing above it is claimed
                    self._empty(window)
                else:
                    self.plan.windows.append(window)
                    self._probe(window)
            if self.plan.windows:
                return True
        return super()._next_phase()

    def _moves_nothing(self) -> bool:
        """Nothing listed at or above the old cursor: the run's cursor stays where it was (the
        sink's `CursorKeeper.end`), so a 204 it believed claims nothing the next poll does not
        ask again. Listing only below it is the overlap under a settled tie second: its own
        window beside the one after U (docs/pull.md, "Never again")."""
        return self.newest is None or self.newest < self.setup.cursor

    def _probe(self, window: Window) -> None:
        window.busy = True
        if window.hi is None:
            self._probe_top(window, 0.0)
            return
        bound = {"updated_at": {"from": window.pos - self.margin}}
        margin = self.margin
        self.list_requests += 1
        self._submit(
            lambda: self._list(bound, ("updated_at", "asc"), 1),
            lambda page: self._on_probe(window, margin, page),
        )

    def _on_probe(self, window: Window, margin: int, page: Any) -> None:
        if window not in self.plan.windows:
            return
        if margin != self.margin:  # asked before the bounds turned out exclusive
            window.busy = False
            return
        if page is None:
            self._probe_top(window, 0.0)
            return
        items: list[dict[str, Any]] = page.items
        self._check_ascending(items, window.pos - margin, None, margin)
        end = float("inf") if window.hi is None else window.hi
        unread = [
            i
            for i in items
            if window.pos <= updated(i) < end and int(i["id"]) not in window.boundary
        ]
        if not unread and (updated(items[-1]) >= end or self._ends(page)):
            self._empty(window)
            return
        log.info("pull_spurious_204", second=window.pos, hi=window.hi, unread=len(unread))
        window.busy = False  # the 204 hid contacts: ask the window again

    def _probe_top(self, window: Window, pause: float) -> None:
        self.list_requests += 1

        def read() -> Any:
            if pause:
                self.stop.wait(pause)
            return self._list(None, ("updated_at", "desc"), 1)

        self._submit(read, lambda page: self._on_probe_top(window, page))

    def _on_probe_top(self, window: Window, page: Any) -> None:
        if window not in self.plan.windows:
            return
        if page is None:
            window.empties += 1
            if window.empties < EMPTY_ASKS:
                self._probe_top(window, EMPTY_PAUSE_S)
                return
            log.warning("pull_account_empty", asked=window.empties)
            self._empty(window)
            return
        window.empties = 0
        stamps = [updated(i) for i in page.items]
        if stamps != sorted(stamps, reverse=True):
            raise FiltersIgnored("amoCRM ignored order[updated_at]=desc")
        if stamps[0] < window.pos:
            self._empty(window)
            return
        log.info("pull_spurious_204", second=window.pos, hi=window.hi, newest=stamps[0])
        window.busy = False  # something at or above pos: ask the window again

    def _check_emptied(self, tie: Tie, number: int) -> None:
        """Page `number` of a tie keeps answering 204: U is probed (the module docstring)."""
        bound = {"updated_at": {"from": tie.second - self.margin}}
        margin = self.margin
        self.list_requests += 1
        self._submit(
            lambda: self._list(bound, ("updated_at", "asc"), 1),
            lambda page: self._on_tie_probe(tie, number, margin, page),
        )

    def _on_tie_probe(self, tie: Tie, number: int, margin: int, page: Any) -> None:
        if tie.finished:
            return
        if margin != self.margin:  # asked before the bounds turned out exclusive
            self._check_emptied(tie, number)
            return
        if page is None:  # the probe's own 204 proves nothing either: the newest page
            self.list_requests += 1
            self._submit(
                lambda: self._list(None, ("updated_at", "desc"), 1),
                lambda top: self._on_tie_top(tie, number, top),
            )
            return
        items: list[dict[str, Any]] = page.items
        self._check_ascending(items, tie.second - margin, None, margin)
        read = tie.known | tie.ids
        at = [int(i["id"]) for i in items if updated(i) == tie.second]
        unread = [i for i in at if i not in read]
        if not unread and (updated(items[-1]) > tie.second or self._ends(page)):
            self._tie_emptied(tie, number, left=len(at))
        else:
            self._tie_spurious(tie, number, unread=len(unread))

    def _on_tie_top(self, tie: Tie, number: int, page: Any) -> None:
        if tie.finished:
            return
        if page is None:  # proves nothing: a non-empty account never answers it so for long
            self._tie_spurious(tie, number, newest=None)
            return
        stamps = [updated(i) for i in page.items]
        if stamps != sorted(stamps, reverse=True):
            raise FiltersIgnored("amoCRM ignored order[updated_at]=desc")
        if stamps[0] < tie.second:
            self._tie_emptied(tie, number, left=0)
        else:
            self._tie_spurious(tie, number, newest=stamps[0])

    def _tie_emptied(self, tie: Tie, number: int, left: int) -> None:
        """Every contact at U now (`left`: none, or only ones the run read) was read: the 204
        was the truth and the read ends before `number` (a contact that left U meanwhile
        shifted the pages read, which the tie's check after the walk sees)."""
        log.info("pull_tie_emptied", second=tie.second, page=number, left=left)
        self._tie_ends_before(tie, number)

    @staticmethod
    def _check_ascending(
        items: list[dict[str, Any]], low: int, hi: int | None, margin: int
    ) -> None:
        stamps = [updated(i) for i in items]
        if stamps[0] < low or stamps != sorted(stamps):
            raise FiltersIgnored(f"asked from {low}, got updated_at {stamps[0]}")
        if hi is not None and stamps[0] > hi - 1 + margin:
            raise FiltersIgnored(f"asked below {hi}, got updated_at {stamps[0]}")

    def _empty(self, window: Window) -> None:
        """`[pos, hi)` proven empty (beyond the contacts of `pos` the window read already)."""
        if window.promised:  # deleted meanwhile: the page before said more follows
            log.warning("pull_window_emptied", second=window.pos, asked=window.asks)
        low = self.starts.pop(id(window), window.pos)
        self._collect([], (low, window.hi))
        self.plan.finish(window)
