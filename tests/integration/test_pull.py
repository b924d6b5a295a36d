"""Pull against the emulator (real HTTP) and a real PostgreSQL: convergence and its invariants.

Every test ends with `assert_converged`: PostgreSQL holds exactly amoCRM's live contacts with
their fields, relations and chat links, nothing more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import Config, DatabaseConfig
from sync.db.runs import pull_lock
from sync.emulator import Emulator, FaultRule
from sync.errors import InvariantError
from sync.pull import PullBusyError, run_pull, serve_request
from tests.integration.amo_emulator import client_for
from tests.integration.pull_helpers import (
    amo_state,
    assert_converged,
    count,
    db_state,
    emulated,
    make_config,
    pull,
)


def _contacts_requests(emulator: Emulator) -> list[dict[str, object]]:
    return [r for r in emulator.requests() if r["path"] == "/api/v4/contacts"]


def _live_ids(emulator: Emulator, n: int) -> list[int]:
    with emulator.account.lock:
        return sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)[:n]


def test_first_pull_is_full_then_incremental_is_a_no_op(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        report = pull(config, engine, emulator)
        assert report.kind == "full"
        assert_converged(engine, emulator)
        again = pull(config, engine, emulator)
        assert (again.kind, again.mode, again.upserted) == ("pull", "keyset", 0)
        assert (
            count(engine, "SELECT count(*) FROM amocrm.sync_runs WHERE status = 'succeeded'") == 2
        )
        assert count(engine, "SELECT count(*) FROM amocrm.sync_changes") == 0


def test_thousands_in_one_second_are_read_by_id_without_loop_or_skip(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=400) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        ids = _live_ids(emulator, 300)
        emulator.clock.advance(30)
        second = emulator.update_contacts([{"id": i, "first_name": f"Bulk {i}"} for i in ids])
        emulator.clear_requests()
        run_start = int(time.time())
        report = pull(config, engine, emulator)
        assert report.fetched >= 300
        tie_reads = [r for r in _contacts_requests(emulator) if "order[id]" in str(r["query"])]
        assert tie_reads, "a tie second larger than a page must be read by id"
        assert_converged(engine, emulator)
        # the cursor passed the tie second, but never the run's start (the emulator runs ahead)
        assert report.cursor is not None
        assert report.cursor >= min(second + 1, run_start)


def test_changes_during_a_tie_pass_do_not_skip(db_config: DatabaseConfig, engine: Engine) -> None:
    with emulated(contacts=400) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        ids = _live_ids(emulator, 200)
        emulator.clock.advance(30)
        emulator.update_contacts([{"id": i, "last_name": "Tie"} for i in ids])
        emulator.clock.advance(2)
        # each of these pages first moves 3 contacts of the current order out of the second
        emulator.add_fault(
            FaultRule(kind="drift", path="/api/v4/contacts", min_page=2, times=4, touch=3)
        )
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_drift_while_paging_and_spurious_204(db_config: DatabaseConfig, engine: Engine) -> None:
    with emulated(contacts=600) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=40)
        emulator.add_fault(
            FaultRule(kind="drift", path="/api/v4/contacts", min_page=2, times=5, touch=4)
        )
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts", min_page=3))
        pull(config, engine, emulator)  # full: order by id, drift cannot shift it
        emulator.clock.advance(10)
        emulator.touch_contacts(count=150)
        emulator.add_fault(FaultRule(kind="drift", path="/api/v4/contacts", times=6, touch=5))
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts", times=1))
        pull(config, engine, emulator)
        # a contact the drift saved after the walk passed it has amoCRM's now as `updated_at`:
        # the next run's, never below the cursor this run stored (under load that happens often)
        cursor = count(engine, CURSOR)
        assert cursor > 0
        behind = _stale_versions(engine, emulator)
        assert all(version >= cursor for version in behind.values()), (cursor, behind)
        emulator.clear_faults()
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


CURSOR = "SELECT (value->>'updated_at')::bigint FROM amocrm.sync_state WHERE key = 'pull.contacts'"


def _stale_versions(engine: Engine, emulator: Emulator) -> dict[int, int]:
    """amoCRM's `updated_at` of every live contact PostgreSQL does not hold at that version."""
    want, have = amo_state(emulator)["live"], db_state(engine)["live"]
    return {
        cid: int(contact["updated_at"])
        for cid, contact in want.items()
        if (have.get(cid) or {}).get("updated_at") != contact["updated_at"]
    }


def test_filters_off_walks_newest_first_and_stops_at_the_cursor(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=1000) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.set_controls(api_filter_enabled=False)
        emulator.clock.advance(60)
        emulator.update_contacts(
            [{"id": i, "name": f"Renamed {i}"} for i in _live_ids(emulator, 70)]
        )
        emulator.clear_requests()
        report = pull(config, engine, emulator)
        assert report.mode == "descending"
        assert len(_contacts_requests(emulator)) <= 4  # 70 changes: 2 pages (+1 prefetched), not 20
        assert_converged(engine, emulator)


def test_ignored_filter_is_detected_from_the_answer(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The account flag says filters work, but the answer shows they were ignored."""
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": i, "name": "X"} for i in _live_ids(emulator, 10)])
        emulator.set_controls(api_filter_enabled=False)
        client = client_for(emulator, url, page_size=50)
        client.fetch_account = lambda **kw: {"is_api_filter_enabled": True}  # type: ignore[method-assign]
        with client:
            report = run_pull(config, engine, client)
        assert report.mode == "descending"
        assert_converged(engine, emulator)


@pytest.mark.parametrize("filters", [True, False], ids=["filters-on", "filters-off"])
def test_deletions_and_restores_from_events(
    db_config: DatabaseConfig, engine: Engine, filters: bool
) -> None:
    with emulated(contacts=200) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        # filters off: the events come unfiltered too (every type, all time), newest first
        emulator.set_controls(api_filter_enabled=filters)
        emulator.update_contacts([{"id": i, "name": "edited"} for i in _live_ids(emulator, 5)])
        a, b, c = _live_ids(emulator, 3)
        emulator.clock.advance(5)
        for cid in (a, b, c):
            emulator.delete_contact(cid)
        emulator.clock.advance(5)
        emulator.restore_contact(b)
        report = pull(config, engine, emulator)
        assert report.deleted == 2
        deleted = count(
            engine,
            "SELECT count(*) FROM amocrm.contacts WHERE is_deleted AND id = ANY(:ids)",
            ids=[a, c],
        )
        assert deleted == 2
        assert_converged(engine, emulator)


def test_unpushed_local_fields_are_kept_and_the_others_take_amocrms(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=100) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        cid = _live_ids(emulator, 1)[0]
        with engine.begin() as conn:  # a local edit, captured by the triggers
            conn.execute(
                sa.text("UPDATE amocrm.contacts SET name = 'Local' WHERE id = :i"), {"i": cid}
            )
        emulator.clock.advance(5)
        emulator.update_contacts([{"id": cid, "name": "Remote", "first_name": "RemoteFirst"}])
        pull(config, engine, emulator)
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT name, first_name, sync_status FROM amocrm.contacts WHERE id = :i"),
                {"i": cid},
            ).one()
            changes = conn.scalar(sa.text("SELECT count(*) FROM amocrm.sync_changes"))
        assert tuple(row) == ("Local", "RemoteFirst", "pending")
        assert changes == 1


def test_full_resync_tombstones_confirmed_deletions(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=200) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        gone = _live_ids(emulator, 4)
        for cid in gone:
            emulator.delete_contact(cid)
        report = pull(config, engine, emulator, full=True)
        assert report.deleted == 4
        assert_converged(engine, emulator)


def test_full_resync_refuses_to_wipe_the_table(db_config: DatabaseConfig, engine: Engine) -> None:
    with emulated(contacts=200) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts*", times=None))
        with pytest.raises(InvariantError, match="refused"):
            pull(config, engine, emulator, full=True)
        # the list and the GETs by id all answered 204: nothing may be tombstoned
        assert count(engine, "SELECT count(*) FROM amocrm.contacts WHERE is_deleted") == 0
        emulator.clear_faults()
        assert count(engine, "SELECT count(*) FROM amocrm.sync_runs WHERE status = 'failed'") == 1
        assert_converged(engine, emulator)


def test_sync_request_row_is_served_by_a_full_resync(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=100) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO amocrm.sync_requests (kind) VALUES ('full')"))
        with client_for(emulator, url, page_size=50) as client:
            report = serve_request(config, engine, client)
            assert serve_request(config, engine, client) is None
        assert report is not None
        assert report.kind == "full"
        with engine.connect() as conn:
            status, run_id = conn.execute(
                sa.text("SELECT status, run_id FROM amocrm.sync_requests")
            ).one()
        assert (status, run_id) == ("done", report.run_id)
        assert_converged(engine, emulator)


def test_held_custom_fields_keep_local_jsonb_and_value_rows(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=100) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        cid = _live_ids(emulator, 1)[0]
        # a field the account has: pull cached the definitions, so an unknown id is refused
        local = [{"field_id": 570003, "field_code": None, "values": [{"value": "mine"}]}]
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE amocrm.contacts SET custom_fields_values = CAST(:v AS jsonb) "
                    "WHERE id = :i"
                ),
                {"v": json.dumps(local), "i": cid},
            )
        emulator.clock.advance(5)
        emulator.update_contacts([{"id": cid, "name": "Remote name"}])
        pull(config, engine, emulator)
        with engine.connect() as conn:
            name, cfv = conn.execute(
                sa.text("SELECT name, custom_fields_values FROM amocrm.contacts WHERE id = :i"),
                {"i": cid},
            ).one()
            values = conn.execute(
                sa.text(
                    "SELECT field_id, value FROM amocrm.contact_custom_field_values "
                    "WHERE contact_id = :i"
                ),
                {"i": cid},
            ).all()
        assert name == "Remote name"  # not held: amoCRM's value
        assert cfv == local  # held: the local value
        assert [tuple(v) for v in values] == [(570003, "mine")]


def test_filters_off_holds_the_cursor_when_a_deletion_lands_mid_walk(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=20)
        pull(config, engine, emulator)
        emulator.set_controls(api_filter_enabled=False)
        emulator.clock.advance(30)
        ids = _live_ids(emulator, 100)
        emulator.update_contacts([{"id": i, "last_name": "Walk"} for i in ids])
        before = count(engine, CURSOR)
        # a deletion of an already-read contact while the walk pages (a UI user, mid-run)
        original = emulator.handle
        state = {"pages": 0}

        def handle(request):  # type: ignore[no-untyped-def]
            if request.path == "/api/v4/contacts":
                state["pages"] += 1
                if state["pages"] == 3:
                    emulator.delete_contact(ids[-1])
            return original(request)

        emulator.handle = handle  # type: ignore[method-assign]
        report = pull(config, engine, emulator)
        emulator.handle = original  # type: ignore[method-assign]
        assert report.mode == "descending"
        after = count(engine, CURSOR)
        assert after == before  # held: the next run re-reads the window
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_exclusive_date_bounds_are_noticed_and_nothing_is_skipped(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=500, inclusive_date_bounds=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=20)
        pull(config, engine, emulator)
        ids = _live_ids(emulator, 300)
        for start in range(0, 300, 15):  # 15 contacts a second: pages end inside a second
            emulator.clock.advance(1)
            emulator.update_contacts(
                [{"id": i, "last_name": "Excl"} for i in ids[start : start + 15]]
            )
        emulator.clock.advance(1)
        emulator.update_contacts([{"id": i, "first_name": "Tie"} for i in ids[:60]])
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_a_second_pull_is_refused_and_a_request_waits_for_the_lock(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=20) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO amocrm.sync_requests (kind) VALUES ('full')"))
        with pull_lock(engine, "amocrm") as held, client_for(emulator, url) as client:
            assert held
            with pytest.raises(PullBusyError):
                run_pull(config, engine, client)
            with pytest.raises(PullBusyError):
                serve_request(config, engine, client)
        with engine.connect() as conn:
            status = conn.scalar(sa.text("SELECT status FROM amocrm.sync_requests"))
        assert status == "pending"
        assert count(engine, "SELECT count(*) FROM amocrm.sync_runs") == 0


def test_one_sync_runs_row_and_one_summary_event_per_run(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=60) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with capture_logs() as logs:
            report = pull(config, engine, emulator)
        summaries = [e for e in logs if e["event"] in ("pull_finished", "pull_failed")]
        assert len(summaries) == 1
        summary = summaries[0]
        assert summary["event"] == "pull_finished"
        assert summary["fetched"] == report.fetched > 0
        assert summary["requests"] == report.requests > 0
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT kind, status, fetched, upserted, requests FROM amocrm.sync_runs")
            ).one()
        assert tuple(row) == ("full", "succeeded", report.fetched, report.upserted, report.requests)


def test_requests_counts_every_call_the_run_sent_retries_included(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        for full in (True, False):
            emulator.clear_requests()
            emulator.add_fault(FaultRule(kind="error", path="/api/v4/contacts*", status=502))
            report = pull(config, engine, emulator, full=full)
            seen = [r for r in emulator.requests() if str(r["path"]).startswith("/api/v4/")]
            assert 502 in [r["status"] for r in seen]  # the retry happened
            assert report.requests == len(seen)
            with engine.connect() as conn:
                stored = conn.scalar(
                    sa.text("SELECT requests FROM amocrm.sync_runs WHERE id = :id"),
                    {"id": report.run_id},
                )
            assert stored == len(seen)


def _stored_ids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.text("SELECT id FROM amocrm.contacts WHERE NOT is_deleted")))


def _page_by_page(db_config: DatabaseConfig, emulator: Emulator, url: str) -> Config:
    """One page in flight at a time: a fault at page N fires after pages 1..N-1 are read."""
    return make_config(db_config, url, emulator.long_lived_token, pull_workers=1)


def _held(config: Config, engine: Engine, emulator: Emulator, **kw: Any) -> bool:
    """Pull once; whether the run held the cursor back."""
    with capture_logs() as logs:
        pull(config, engine, emulator, **kw)
    return "pull_cursor_held" in [e["event"] for e in logs]


@contextmanager
def _mirrored_amo_an_hour_behind(
    db_config: DatabaseConfig, engine: Engine
) -> Iterator[tuple[Emulator, Config]]:
    """300 contacts pulled once; amoCRM's clock an hour behind ours, so that its times, not
    our clock, decide the cursor."""
    settings = {"contacts": 300, "trashed_fraction": 0.0, "clock_start": time.time() - 3600}
    with emulated(**settings) as (emulator, url):
        config = _page_by_page(db_config, emulator, url)
        pull(config, engine, emulator)
        yield emulator, config


def test_a_first_full_resync_with_a_deletion_mid_walk_stores_every_contact(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300, trashed_fraction=0.0) as (emulator, url):
        config = _page_by_page(db_config, emulator, url)
        # before a later page, a user deletes a contact of the walk: windows are keyset reads,
        # so no other contact moves out of view (an order[id] walk lost one here)
        emulator.add_fault(FaultRule(kind="vanish", path="/api/v4/contacts", skip=2))
        with capture_logs() as logs:
            first = pull(config, engine, emulator)
        assert first.kind == "full"
        assert set(_live_ids(emulator, 1000)) <= _stored_ids(engine)
        assert "pull_cursor_held" not in [e["event"] for e in logs]
        again = pull(config, engine, emulator)
        assert (again.kind, again.mode) == ("pull", "keyset")
        assert_converged(engine, emulator)


def test_a_full_resync_stores_a_new_contact_whatever_is_deleted_meanwhile(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with _mirrored_amo_an_hour_behind(db_config, engine) as (emulator, config):
        emulator.clock.advance(10)
        new, _after = emulator.create_contacts([{"name": "new A"}, {"name": "new B"}])
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": _live_ids(emulator, 1)[0], "name": "later"}])
        emulator.add_fault(FaultRule(kind="vanish", path="/api/v4/contacts", skip=3, times=3))
        full = pull(config, engine, emulator, full=True)
        assert full.kind == "full"
        assert new in _stored_ids(engine)  # listed by the full resync itself
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_exclusive_date_bounds_and_a_deletion_mid_walk_lose_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    settings = {"contacts": 300, "trashed_fraction": 0.0, "inclusive_date_bounds": False}
    with emulated(**settings) as (emulator, url):
        config = _page_by_page(db_config, emulator, url)
        emulator.add_fault(FaultRule(kind="vanish", path="/api/v4/contacts", skip=3))
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert "pull_bounds_exclusive" in [e["event"] for e in logs]
        assert set(_live_ids(emulator, 1000)) <= _stored_ids(engine)
        with engine.connect() as conn:
            state = conn.scalar(
                sa.text("SELECT value FROM amocrm.sync_state WHERE key = 'pull.contacts'")
            )
        assert state["bounds"] == "exclusive"  # the next runs ask one second wider at once
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert "pull_bounds_exclusive" not in [e["event"] for e in logs]
        assert_converged(engine, emulator)


def test_a_restore_during_the_full_resync_walk_loses_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300, trashed_fraction=0.05) as (emulator, url):
        config = _page_by_page(db_config, emulator, url)
        pull(config, engine, emulator)
        emulator.clock.advance(10)
        assert any(c.is_deleted for c in emulator.account.contacts.values())  # some to restore
        emulator.add_fault(FaultRule(kind="revive", path="/api/v4/contacts", skip=2, times=3))
        assert not _held(config, engine, emulator, full=True)
        assert_converged(engine, emulator)


def test_filters_off_a_full_resync_by_id_holds_the_cursor_after_a_shift(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The fallback (order[id]) can be shifted by a deletion: it holds the cursor, and a spurious
    204 on the events after the walk does not let it move either."""
    with emulated(contacts=300, trashed_fraction=0.05, api_filter_enabled=False) as (
        emulator,
        url,
    ):
        config = _page_by_page(db_config, emulator, url)
        emulator.add_fault(FaultRule(kind="vanish", path="/api/v4/contacts", min_page=3))
        # the read before the walk passes; the one after answers 204 on page 1 (twice)
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/events", skip=1, times=2))
        with capture_logs() as logs:
            first = pull(config, engine, emulator)
        assert first.mode == "full-by-id"
        assert "pull_cursor_held" in [e["event"] for e in logs]
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_a_full_resync_whose_listing_came_back_empty_does_not_move_the_cursor(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with _mirrored_amo_an_hour_behind(db_config, engine) as (emulator, config):
        emulator.clock.advance(60)
        (new,) = emulator.create_contacts([{"name": "new since the cursor"}])
        emulator.clock.advance(600)
        emulator.update_contacts([{"id": _live_ids(emulator, 1)[0], "name": "later"}])
        # a spurious 204 on page 1: the walk lists nothing, every stored contact is read by id
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts", min_page=1))
        full = pull(config, engine, emulator, full=True)
        assert full.deleted == 0
        pull(config, engine, emulator)
        assert new in _stored_ids(engine)
        assert_converged(engine, emulator)
