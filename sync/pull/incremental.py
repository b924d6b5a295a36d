"""An incremental pull: the spans from the cursor (less the overlap), or what a killed run left,
less the settled tie seconds (those seconds only), through the pipeline; deletions and restores from
amoCRM's events, applied at the end. Accounts whose filters are ignored take the descending walk
(`sync.pull.filters_off`)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from sync.clock import to_unix
from sync.core.mapping import event_changes
from sync.db.engine import sync_origin
from sync.db.runs import EVENTS_CURSOR
from sync.logs import get_logger
from sync.pull.events import Marker
from sync.pull.fetch import SETTLE_S, FiltersIgnored
from sync.pull.filters_off import descending, since_by_id
from sync.pull.pipeline import MAX_SETTLED, RunBase, once_per_theta
from sync.pull.readahead import ReadAhead
from sync.pull.sink import CompletePage
from sync.pull.stage import updated
from sync.pull.straddle import WalkTies, amo_clock, reread_tie
from sync.pull.windows import Span, skip_settled

log = get_logger("sync.pull")

READ_AHEAD = 2  # pages the descending fallback reads ahead of the one being stored


class IncrementalRun(RunBase):
    """The incremental run, and the events both kinds of run apply."""

    def _incremental(self) -> None:
        old = self.old
        assert old.cursor is not None
        overlap = self.sync.overlap_s
        start = max(0, old.cursor - overlap)
        if old.windows and old.ceiling is not None:  # a killed run: its windows and its head
            spans: list[Span] = [*old.windows, (max(0, old.ceiling - overlap), None)]
        else:
            spans = [(start, None)]
        # only the settled second itself is left out: cutting the spans below it too threw
        # away the overlap under a bulk second, and a version listed late there was never read
        spans = skip_settled(spans, old.ties_settled, old.cursor)
        self._begin(spans, seen_run=None)
        events_from = self._events_start(start)
        side: list[Future[list[Mapping[str, Any]]]] = []  # the events, once amoCRM answered
        due = self.memo is None or self.memo.events_due()

        def answered() -> None:  # amoCRM's first answer: no longer "connecting"
            self._start_progress(None, "pulling changes")
            if due and not side:
                side.append(self.helpers.submit(self.events.since, events_from))

        filters_off = self._filters_check()
        if self.memo is not None and self.memo.cached_filters() is False:
            self._descending(start, events_from)
            return
        self.report.mode = "keyset"
        marker: list[Marker] = []

        def baseline() -> None:
            if side:
                known = {str(e.get("id")) for e in side[0].result()}
                marker.append(Marker(events_from, known))
            else:
                marker.append(self.events.marker())

        try:
            self._walk(
                spans,
                self._setup(full=False),
                baseline=baseline,
                deleted_since=once_per_theta(
                    lambda theta: self.events.new_deletion(marker[0], theta)
                ),
                filters_off=filters_off,
                answered=answered,
            )
        except FiltersIgnored as exc:
            log.warning("pull_filter_ignored", detail=str(exc))
            self._remember_filters(False)
            self._descending(start, events_from)
            return
        self._events_unless_idle(events_from, side[0] if side else None)

    def _events_start(self, contacts_start: int) -> int:
        with self.engine.connect() as conn:
            state = self.runs.get_state(conn, EVENTS_CURSOR)
        if state is None:
            return contacts_start
        return max(0, int(state["created_at"]) - self.sync.overlap_s)

    def _events_unless_idle(
        self, start: int, listed: Future[list[Mapping[str, Any]]] | None
    ) -> None:
        """Apply deletions and restores, unless this is an idle poll of the daemon whose events
        were read less than `sync.events_interval_s` (unset: 3 polls) ago (see `sync.pull.memo`);
        the final cursor state goes in the same transaction."""
        assert self.sink is not None
        memo = self.memo
        if listed is None and memo is not None and self.sink.upserted == 0:
            self.report.events = "skipped"
            self._apply([], None)
            return
        began = None if memo is None else memo.now()
        events = listed.result() if listed is not None else self.events.since(start)
        events = [*events, *self.events.later]  # listed after the walk's ties: newer
        self.report.events = "read"
        self._apply(events, self.events.newest)
        if memo is not None and began is not None:
            memo.events_done(began)

    def _apply(self, events: list[Mapping[str, Any]], newest: int | None) -> list[int]:
        """Deletions/restores, the events cursor and the final contacts state, in one
        transaction (restored contacts missing locally, or left "not found" by push, are read
        by id first: storing them clears that status). Returns the times of the deletions."""
        assert self.keeper is not None
        changes = self._settle_unsure(event_changes(events))
        deleted = {cid: at for cid, (gone, at) in changes.items() if gone}
        restored = [cid for cid, (gone, _) in changes.items() if not gone]
        self._fetch_restored(restored)
        with self.engine.begin() as conn:
            sync_origin(conn)
            self._count_deleted(conn, self.store.mark_deleted(conn, deleted))
            self.report.restored += self.store.mark_restored(conn, restored)
            if newest is not None:
                cursor = min(newest + 1, self.keeper.ceiling)
                self.runs.set_state(conn, EVENTS_CURSOR, {"created_at": cursor})
            self.keeper.store_final(conn, complete=True)
        return list(deleted.values())

    def _settle_unsure(
        self, changes: dict[int, tuple[bool | None, int]]
    ) -> dict[int, tuple[bool, int]]:
        """A contact deleted and restored in the same second: amoCRM says by id which came
        last (found: live, and stored now; absent: deleted)."""
        unsure = sorted(cid for cid, (gone, _) in changes.items() if gone is None)
        found = self.client.fetch_contacts_by_ids(unsure, with_=self.sync.with_) if unsure else {}
        if found:
            self._store_now(self._complete(list(found.values()), full=False))
        return {
            cid: ((cid not in found) if gone is None else gone, at)
            for cid, (gone, at) in changes.items()
        }

    def _fetch_restored(self, restored: list[int]) -> None:
        if not restored:
            return
        with self.engine.connect() as conn:
            missing = sorted(self.store.unsettled_ids(conn, restored))
        if missing:
            found = self.client.fetch_contacts_by_ids(missing, with_=self.sync.with_)
            self._store_now(self._complete(list(found.values()), full=False))

    def _descending(self, start: int, events_from: int) -> None:
        """The walk for accounts whose filters are ignored; the cursor waits for the events."""
        assert self.keeper is not None
        self.report.mode = "descending"
        self._start_progress(None, "pulling changes (newest first)")
        walk_started = to_unix(self.clock.now())
        ties = WalkTies()
        size = self.config.amocrm.page_size
        walk = descending(self.client, self.sync.with_, size, start, ties)
        first_top: int | None = None  # the newest contact listed when the walk began
        with ReadAhead(
            walk, depth=READ_AHEAD, name="pull-walk", prepare=self._listed_page
        ) as ahead:
            for page in ahead:
                if first_top is None:
                    first_top = max(map(updated, page.items))
                self._store_now(page)
        settled_below = min(self.ceiling, first_top or start) - SETTLE_S
        settled = self._read_ties(ties, start, settled_below, skip=set(self.old.ties_settled))
        if self.final_pass:
            settled = self._descending_final(settled_below, settled)
        events = self.events.since(events_from)
        self.report.events = "read"
        newest = self.keeper.newest
        # deletions after the walk began may have shifted pages; the threshold takes the smaller
        # of our clock and amoCRM's (the newest updated_at read), so clock skew cannot hide one
        since = min(walk_started, newest or walk_started) - 1
        changes = event_changes(events)
        late = any(gone is not False and at >= since for gone, at in changes.values())
        if late:
            log.warning("pull_cursor_held", reason="contacts deleted during the descending walk")
            self.keeper.newest = None  # the final state keeps the old cursor
        else:  # a read by id a deletion shifted may have skipped a member: nothing settled then
            self._settle_ties(settled)
        self._apply(events, self.events.newest)

    def _descending_final(self, floor: int, settled: set[int | None]) -> set[int | None]:
        """The final pass of the descending walk (`final_pass`): newest first down to `floor`,
        sent no earlier than SETTLE_S after the run began. Without amoCRM's clock here, `floor`
        is the lower of our start and the newest contact listed at the walk's start (lists show
        nothing newer than amoCRM's clock), less SETTLE_S: at or below amoCRM's start less it."""
        self.clock.sleep(max(0.0, self.settle_until - self.clock.now().timestamp()))
        size, ties = self.config.amocrm.page_size, WalkTies()
        for items in descending(self.client, self.sync.with_, size, floor, ties):
            self._store_now(self._listed_page(items))
        return self._read_ties(ties, floor, floor, skip=settled)

    def _read_ties(
        self, ties: WalkTies, start: int, settled_below: int, skip: set[int | None]
    ) -> set[int | None]:
        """The seconds the walk saw across a page boundary (`sync.pull.straddle`), each read
        whole by one page, or, when no page holds one, every contact since `start` by id. A
        second read whole at least SETTLE_S before amoCRM's clock then (its `Date`; else
        `settled_below`) gains no contact now: it is remembered as settled, so the next runs,
        whose overlap still holds it, do not read it again (`ties_settled`, as for a tie read by
        id in the windows), but only by `_settle_ties` once the events show no deletion during the
        walk (each shifts the pages by id: one may skip a member; and a state stored before
        that check, then a kill, must not carry the second as settled). Seconds in `skip` are
        settled already; returns them with those settled now (the final pass skips them: they
        gained no contact since)."""
        assert self.keeper is not None
        spans = [s for s in ties.spans.values() if s.second >= start and s.second not in skip]
        unread, settled = [], []
        for span in spans:
            found = reread_tie(self.client, self.sync.with_, span)
            if found.items is None:
                unread.append(span.second)
                continue
            if found.items:
                self._store_now(self._listed_page(found.items))
            if span.second <= _settled_below(found.amo_now, settled_below):
                settled.append(span.second)
        if unread:
            log.warning("pull_tie_read_by_id", seconds=sorted(unread),
                        reason="no page of at most 250 holds the tie whole")  # fmt: skip
            below = _settled_below(amo_clock(self.client), settled_below)
            size, workers = self.config.amocrm.page_size, self.sync.pull_workers
            for items in since_by_id(self.client, self.sync.with_, size, start, workers):
                self._store_now(self._listed_page(items))
            settled += [second for second in unread if second <= below]
        return {*skip, *settled}

    def _settle_ties(self, settled: set[int | None]) -> None:
        """Remember the seconds read whole and settled (`_read_ties`) with those already kept."""
        assert self.keeper is not None
        seconds = {s for s in settled if s is not None}
        if seconds:
            kept = sorted(seconds.union(self.keeper.ties_settled))
            self.keeper.ties_settled = tuple(kept[-MAX_SETTLED:])

    def _listed_page(self, items: list[dict[str, Any]]) -> CompletePage:
        page = self._complete(items, full=False)
        page.listed = True
        return page


def _settled_below(amo_now: float | None, otherwise: int) -> int:
    """The newest second that can gain no contact: amoCRM's clock less SETTLE_S."""
    return otherwise if amo_now is None else int(amo_now) - SETTLE_S
