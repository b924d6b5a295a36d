"""A full resync: `[0, ∞)` through the pipeline with the newest page at once and a final pass
from the run's start, then every stored live contact the run did not list is read by id: found →
stored, absent → tombstoned (unless more than `sync.max_delete_share` that amoCRM's deletion
events do not confirm). Accounts whose filters are ignored take the walk by id
(`sync.pull.filters_off`)."""

from __future__ import annotations

from typing import Any

from sync.clock import to_unix
from sync.db.engine import sync_origin
from sync.db.runs import CONTACTS_CURSOR
from sync.errors import InvariantError
from sync.logs import get_logger
from sync.pull.events import Events, Marker
from sync.pull.fetch import FiltersIgnored
from sync.pull.filters_off import by_id
from sync.pull.pipeline import RunBase, once_per_theta
from sync.pull.readahead import ReadAhead
from sync.pull.sink import CompletePage

log = get_logger("sync.pull")

DELETE_FLOOR = 10  # a full resync may always tombstone this many contacts, whatever the share
READ_AHEAD = 2  # pages the walk by id reads ahead of the one being stored


class FullRun(RunBase):
    """The full resync."""

    def _full(self) -> None:
        self.report.mode = "full"
        with self.engine.begin() as conn:
            self.store.forget_seen(conn)  # lists left by killed runs (we hold the lock)
            total = self.live_before = self.store.live_count(conn)
        self._begin([(0, None)], seen_run=self.report.run_id)
        # amoCRM's contact lists carry no total: the stored live contacts are the estimate;
        # shown from amoCRM's first answer on (until then the bar says it is connecting)
        started = lambda: self._start_progress(total or None, "full resync")  # noqa: E731
        filters_off = self._filters_check()
        if self.memo is not None and self.memo.cached_filters() is False:
            self._full_by_id()
            return
        marker: list[Marker] = []
        try:
            self._walk(
                [(0, None)],
                self._setup(full=True),
                baseline=lambda: marker.append(self.events.marker()),
                deleted_since=once_per_theta(
                    lambda theta: Events(self.client).new_deletion(marker[0], theta)
                ),
                filters_off=filters_off,
                answered=started,
            )
        except FiltersIgnored as exc:
            log.warning("pull_filter_ignored", detail=str(exc))
            self._remember_filters(False)
            self._full_by_id()
            return
        self._reconcile_unseen(shifted=False)

    def _full_by_id(self) -> None:
        """The full resync of accounts whose filters are ignored (`sync.pull.filters_off`)."""
        self.report.mode = "full-by-id"
        self._start_progress(None, "full resync (by id)")
        before = self.events.marker()
        pages = by_id(
            self.client, self.sync.with_, self.config.amocrm.page_size, self.sync.pull_workers
        )
        with ReadAhead(pages, depth=READ_AHEAD, name="pull-walk", prepare=self._full_page) as ahead:
            for page in ahead:
                self._store_now(page)
        self._reconcile_unseen(shifted=self.events.moved_since(before))

    def _full_page(self, items: list[dict[str, Any]]) -> CompletePage:
        page = self._complete(items, full=True)
        page.listed = True
        return page

    def _guard(self, gone: list[int], live: int, allowed: int) -> None:
        """More absent contacts than `allowed`: those that amoCRM's deletion events name too
        are confirmed twice and do not count; if the rest are still too many, nothing is
        tombstoned and the run fails (an API that wrongly answers empty must not wipe the
        table, and none of what it shows absent can be trusted then)."""
        if len(gone) <= allowed:
            return  # within the guard: the events are not read (a request per ten contacts)
        confirmed = self.events.confirmed_deletions(gone, lambda unsure: unsure > allowed)
        unsure = len(gone) - len(confirmed)
        if unsure > allowed:
            raise InvariantError(
                f"full resync refused to mark {unsure} of {live} contacts deleted that no "
                f"deletion event confirms (more than sync.max_delete_share = "
                f"{self.sync.max_delete_share}); nothing was tombstoned"
            )
        log.info("pull_deletions_confirmed", confirmed=len(confirmed), unconfirmed=unsure)

    def _reconcile_unseen(self, *, shifted: bool) -> None:
        """Stored live contacts this run did not list: read by id; found → stored, absent →
        tombstoned (the guard first). The final cursor state goes with the tombstones."""
        assert self.keeper is not None
        with self.engine.connect() as conn:
            unseen = self.store.unseen(conn, self.report.run_id)
            live = self.store.live_count(conn)
        found: dict[int, dict[str, Any]] = {}
        if unseen:
            found = self.client.fetch_contacts_by_ids(unseen, with_=self.sync.with_)
            self._store_now(self._complete(list(found.values()), full=True))
        gone = [cid for cid in unseen if cid not in found]
        with self.engine.begin() as conn:  # every contact is stored with what was gained: the
            self.shape.record(conn, self.runs)  # guard below failing must not make each poll full
        allowed = max(DELETE_FLOOR, int(self.sync.max_delete_share * live))
        self._guard(gone, live, allowed)
        # filters off: a live contact no page listed proves the listing skipped something
        shifted = shifted or (self.report.mode == "full-by-id" and bool(found))
        now = to_unix(self.clock.now())
        with self.engine.begin() as conn:
            sync_origin(conn)
            self._count_deleted(conn, self.store.mark_deleted(conn, dict.fromkeys(gone, now)))
            if not shifted:
                self.keeper.store_final(conn, complete=True)
            elif self.old.cursor is None:
                # a first run: cursor 0 makes the next run an incremental walk over everything
                self.runs.set_state(conn, CONTACTS_CURSOR, {"updated_at": 0})
                self.keeper.cursor = 0
        if shifted:
            log.warning(
                "pull_cursor_held",
                reason="the listing may have skipped contacts (deleted or restored during the "
                "walk, or listed by no page)",
            )
