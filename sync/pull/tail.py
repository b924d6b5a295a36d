"""The fetch stage after its windows: the final pass, and the checks that each tie was read whole.

After the walk, the final pass (`_tail`) lists everything from min(theta) on. A tie is re-read
(`_verify`, pages from the last to the first, one at a time: a contact leaving U then only
shifts unread contacts towards unread pages) when a version with `updated_at` ≥ theta was first
listed after its read began, or a deletion is listed that was not before (`deleted_since`). A
full resync (and the CLI's incremental run) reads the final pass from amoCRM's start of the run
(less `SETTLE_S`) whatever its ties, sent no earlier than `SETTLE_S` after the run began (lists
lag writes: a contact written just before the start is listed by then). See docs/pull.md for the
whole argument.
"""

from __future__ import annotations

from typing import Any

from sync.errors import InvariantError
from sync.pull.stage import (
    RECENT_LIMIT,
    SETTLE_S,
    TIE_ASKS,
    Tie,
    log,
)
from sync.pull.ties import TieReads
from sync.pull.windows import Window, subtract


class AfterWalk(TieReads):
    """What comes when the windows are done."""

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
            self._submit(lambda: self._verify_all(shaken), self._on_verified, produces=True)
            self.reread_from = min(t.theta for t in shaken)
            return True
        if self.reread_from is not None:  # after a re-read: what changed meanwhile, stored
            self._final_pass(self.reread_from)
            self.reread_from = None
            return True
        for tie in self.ties:
            self._collect([], (tie.second, tie.second + 1))
        return False

    def _final_beside_chats(self) -> bool:
        """A full resync's final pass needs every window answered, not their pages stored: it
        goes out beside the last chat links (a round trip less at the end)."""
        if not self.setup.final_pass or self.full_tail or self.plan.windows:
            return False
        if self.baseline_state == "asked" or any(not t.finished for t in self.ties):
            return False
        self.full_tail = True
        self._tail([t for t in self.ties if not t.checked], self.amo_start() - SETTLE_S)
        return True

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
        wait = 0.0 if start is None else self.setup.settle_until - self.setup.now()
        if wait > 0:  # a fast run: what was written just before it began may not be listed yet
            self._submit(lambda: self.stop.wait(wait), lambda _: self._final_pass(min(starts)))
        else:
            self._final_pass(min(starts))  # a 204 here is probed (`sync.pull.empty`)
        for tie in ties:
            tie.checked = True
        if ties:
            theta = min(t.theta for t in ties)
            check = self._last(lambda: self.deleted_since(theta))
            self._submit(check, lambda gone: self._deleted(ties, gone))

    @staticmethod
    def _deleted(ties: list[Tie], gone: bool) -> None:
        for tie in ties:
            tie.deleted = gone

    def _final_pass(self, start: int) -> None:
        """Everything from `start` on, by keyset to the end; seconds read by id are left out."""
        read = [(t.second, t.second + 1) for t in self.ties]
        for lo, hi in subtract([(start, None)], read):
            self.plan.windows.append(Window(lo, hi, splittable=False))

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
        """Second U again, its pages from the last to the first, one at a time. Info, not a
        warning: a contact edited or deleted in amoCRM while a busy second was read is ordinary
        on a live account, and this read is how the run stays whole; nothing for an operator."""
        log.info("pull_tie_reverified", second=tie.second, deleted=tie.deleted)
        size = self.setup.page_size
        top = max(1, -(-len(tie.ids | tie.known) // size))
        items: list[dict[str, Any]] = []
        number = top
        while True:  # a second that grew (not settled yet): read upwards first
            page = self._persisting(tie, number)
            if page is None or self._ends(page):
                break
            number += 1
        if page is not None:
            items += page.items
        for lower in range(number - 1, 0, -1):
            page = self._persisting(tie, lower)
            if page is not None:
                items += page.items
        return items

    def _persisting(self, tie: Tie, number: int) -> Any:
        """Page `number` of second U by id; a 204 is asked again up to `TIE_ASKS` times in all
        before it is believed (amoCRM's spurious 204s do not persist, and a page skipped here
        would not be read again). A run gets here only when a tie was shaken: rare, so the
        asks cost nothing on a run that does not need them."""
        for _ in range(TIE_ASKS):
            page = self._list(self._tie_filter(tie.second), ("id", "asc"), number)
            self.list_requests += 1
            if page is not None:
                return page
        return None

    def _on_verified(self, results: list[tuple[Tie, list[dict[str, Any]]]]) -> None:
        for tie, items in results:
            self._seen(items)
            self._collect(self._tie_items(tie, items) if items else [], None)
