"""A tie second that empties (or shrinks) while it is read by id, against the emulator (real
HTTP) and a real PostgreSQL: amoCRM automations bulk-create contacts and edit them all a moment
later, so the second the pull found full is empty when its read by id begins. That 204 is the
truth, not a fault, and the pull ends `succeeded` with every contact's edited version; a 204 for a
second that still holds contacts is never taken as read (the run fails as before).

The bulk edit is timed by the emulator's `edit` fault aimed at the reads by id (`order="id"`):
it renames every contact of the second just before the tie's first (or second) page is served,
which moves them all to amoCRM's next second — what the audit saw with a real bulk PATCH sent
0.2-0.8 s after the bulk POST.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

import sync.emulator.core as core
from sync.config import DatabaseConfig
from sync.emulator import Emulator, FaultRule
from sync.emulator.reading import order_of as _order_of
from sync.emulator.reading import page_of
from sync.emulator.wire import Request
from sync.errors import InvariantError
from sync.pull.stage import TIE_ASKS
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull

BEHIND = {"clock_start": time.time() - 600}  # amoCRM's changes are in the past, as on an account
PAGE = 25


def _bulk_create(emulator: Emulator, count: int) -> tuple[int, list[int]]:
    """`count` contacts created in one second T (one bulk POST), the clock then running on."""
    emulator.clock.freeze()
    second = emulator.clock.now_s()
    ids = emulator.create_contacts([{"name": f"Bulk {n}"} for n in range(count)])
    emulator.clock.unfreeze()
    emulator.clock.advance(1.5)  # the bulk edit lands in a later second
    return second, ids


def _runs(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, error FROM amocrm.sync_runs ORDER BY id"))
        return [(r[0], r[1]) for r in rows]


def _at(emulator: Emulator, ids: list[int], second: int) -> set[int]:
    with emulator.account.lock:
        return {i for i in ids if emulator.account.contacts[i].updated_at == second}


@pytest.mark.parametrize("final_pass", [False, True], ids=["daemon", "cli"])
def test_a_second_emptied_by_a_bulk_edit_before_its_read_by_id_is_read_not_a_failure(
    db_config: DatabaseConfig, engine: Engine, final_pass: bool
) -> None:
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, 6 * PAGE)
        # the bulk PATCH: every contact of T, just before the first page of T by id is served
        emulator.add_fault(
            FaultRule(kind="edit", path="/api/v4/contacts", order="id", touch=10_000)
        )
        with capture_logs() as logs:
            report = pull(config, engine, emulator, final_pass=final_pass)
        assert [f["fired"] for f in emulator.faults()] == [1]
        assert not _at(emulator, ids, second)  # the second really emptied
        assert report.fetched
        assert _runs(engine)[-1] == ("succeeded", None)
        assert "pull_tie_emptied" in [e["event"] for e in logs]
        emulator.clear_faults()
        assert_converged(engine, emulator)  # every contact stored in its edited version


def test_a_second_emptied_after_its_first_page_is_read_and_checked(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The bulk edit lands between the tie's pages: page 2 answers 204 after page 1 said more
    follows, and so does page 1 by `order[id]=desc`; the contacts seen are read by id (one
    request at a time: page 1 is answered before the edit)."""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(
            db_config, url, emulator.long_lived_token, page_size=PAGE, pull_workers=1
        )
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, 6 * PAGE)
        emulator.add_fault(
            FaultRule(kind="edit", path="/api/v4/contacts", order="id", min_page=2, touch=10_000)
        )
        with capture_logs() as logs:
            report = pull(config, engine, emulator)
        assert not _at(emulator, ids, second)
        assert report.fetched
        assert _runs(engine)[-1] == ("succeeded", None)
        events = [e["event"] for e in logs]
        assert "pull_tie_emptied" in events
        emulator.clear_faults()
        assert_converged(engine, emulator)


@pytest.mark.parametrize(("count", "moved"), [(6 * PAGE, 6 * PAGE - 7), (60, PAGE)])
def test_a_second_that_shrinks_while_it_is_read_is_read_whole(
    db_config: DatabaseConfig, engine: Engine, count: int, moved: int
) -> None:
    """`moved` contacts of T, the lowest ids (read by pages 1-2 already), move on just before
    page 3 of its read by id: page 3 is really empty, and the contacts left all fit on pages
    1-2. Page 1 by `order[id]=desc` then lists every one above the pages read: it is short (7
    left), or it reaches down to them (35 left, ids 26-60: the page lists 36-60, the pages read
    ended at 50): the tie ends there with them, no failure. (One request at a time: pages 1 and
    2 are answered before the edit, whatever the speculation.)"""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(
            db_config, url, emulator.long_lived_token, page_size=PAGE, pull_workers=1
        )
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, count)
        emulator.add_fault(
            FaultRule(kind="edit", path="/api/v4/contacts", order="id", min_page=3, touch=moved)
        )
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert [f["fired"] for f in emulator.faults()] == [1]
        assert _at(emulator, ids, second) == set(sorted(ids)[moved:])
        assert _runs(engine)[-1] == ("succeeded", None)
        checked = [e for e in logs if e["event"] == "pull_tie_end_checked"]
        assert [e["above"] for e in checked] == [min(count - moved, count - 2 * PAGE)]
        emulator.clear_faults()
        assert_converged(engine, emulator)


@pytest.mark.parametrize("min_page", [1, 2])
def test_a_204_for_a_second_that_still_holds_contacts_is_never_taken_as_read(
    db_config: DatabaseConfig, engine: Engine, min_page: int
) -> None:
    """amoCRM's spurious 204 on the read by id, persisting, while nothing moved: the run fails
    (and the next one reads the second) rather than end with contacts of T missing."""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, 6 * PAGE)
        fault = FaultRule(
            kind="empty_page", path="/api/v4/contacts", order="id", min_page=min_page, times=None
        )
        emulator.add_fault(fault)
        with pytest.raises(
            InvariantError, match=f"keeps answering 204 for the contacts of {second}$"
        ):
            pull(config, engine, emulator)
        assert _runs(engine)[-1][0] == "failed"
        assert _at(emulator, ids, second) == set(ids)  # nothing moved: a fault, not a change
        emulator.clear_faults()
        pull(config, engine, emulator)  # the next run reads the second
        assert_converged(engine, emulator)


def test_a_mid_read_204_that_passes_is_asked_again_and_the_second_read_whole(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        _bulk_create(emulator, 6 * PAGE)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", order="id", min_page=2, times=2)
        )
        with capture_logs() as logs:
            report = pull(config, engine, emulator)
        assert report.fetched
        assert "pull_tie_emptied" not in [e["event"] for e in logs]
        assert sum(int(f["fired"]) for f in emulator.faults()) == 2
        emulator.clear_faults()
        assert_converged(engine, emulator)


def _marking(
    monkeypatch: pytest.MonkeyPatch, second: int, on_top: Callable[[], None] | None = None
) -> None:
    """Name two reads for faults to aim at: the contacts read by id (`filter[id][]`: "byid")
    and, once the tie's page 1 was asked `TIE_ASKS` times, the probe of `second` (page 1 from
    it ascending, no upper bound: "probe"). `on_top` runs once, before the newest page (no
    filter, `order[updated_at]=desc`) is served; the events read of a tie's start (which
    releases it) is held until then, and a moment more, so that the run has seen that page."""
    asked = [0]
    hooks = [on_top] if on_top else []
    topped = threading.Event()

    def order_of(request: Request) -> str | None:
        order = _order_of(request)
        filters = request.query.get("filter") or {}
        if on_top and request.path.endswith("/events") and not topped.is_set():
            topped.wait(5)
            time.sleep(0.3)
        newest = order == "updated_at" and request.query["order"]["updated_at"] == "desc"
        if hooks and newest and not filters:
            hooks.pop()()
            topped.set()
        if order == "id":
            asked[0] += 1
        if order is None and page_of(request) is not None and "id" in filters:
            return "byid"
        bound = filters.get("updated_at") if isinstance(filters, dict) else None
        if (
            order == "updated_at"
            and asked[0] >= TIE_ASKS
            and isinstance(bound, dict)
            and "to" not in bound
            and int(bound.get("from", -1)) == second
        ):
            return "probe"
        return order

    monkeypatch.setattr(core, "order_of", order_of)


@pytest.mark.parametrize("final_pass", [False, True], ids=["daemon", "cli"])
def test_a_persisting_204_and_an_empty_answer_by_id_never_prove_a_second_emptied(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch, final_pass: bool
) -> None:
    """The review's repro: page 1 of a tie that holds all its contacts answers spurious 204s
    `TIE_ASKS` times, and a read by id answers one too (as `{}`: "none is still there"). Before,
    the second was believed emptied and the run exited 0 with 125 of its 150 contacts missing;
    now the probe lists contacts at U, so the page is asked again and read whole."""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, 6 * PAGE)
        _marking(monkeypatch, second)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", order="id", times=TIE_ASKS)
        )
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts", order="byid"))
        with capture_logs() as logs:
            pull(config, engine, emulator, final_pass=final_pass)
        assert _runs(engine)[-1] == ("succeeded", None)
        assert _at(emulator, ids, second) == set(ids)  # nothing moved: a fault, not a change
        emulator.clear_faults()
        assert_converged(engine, emulator)  # before: 125 of the 150 missing, the run succeeded
        events = [e["event"] for e in logs]
        assert "pull_tie_spurious_204" in events
        assert "pull_tie_emptied" not in events


def test_contacts_the_run_never_listed_keep_a_second_from_being_taken_as_emptied(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part-way through a batched bulk edit: the contacts the window listed in U (among its 50
    lowest ids) move on, and another contact is written after them, before the tie's read
    begins (the run sees that one first: no shift of the tie is suspected); the tie's page 1
    then answers spurious 204s. Every contact the run saw has left U, but 100 it never listed
    are still there: before, reading the seen ones by id believed U emptied and the run exited 0
    without those 100; the probe lists them."""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(
            db_config, url, emulator.long_lived_token, page_size=PAGE, pull_workers=1
        )
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, ids = _bulk_create(emulator, 6 * PAGE)
        moved = sorted(ids)[: 2 * PAGE]

        def part_of_the_bulk_edit() -> None:
            edit = [{"id": i, "name": f"Moved {i}"} for i in moved]
            emulator.update_contacts(edit, at=second + 1)  # a second ago: listed by now
            emulator.clock.advance(2)
            emulator.create_contacts([{"name": "Later"}])

        _marking(monkeypatch, second, on_top=part_of_the_bulk_edit)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", order="id", times=TIE_ASKS)
        )
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert _at(emulator, ids, second) == set(ids) - set(moved)
        assert _runs(engine)[-1] == ("succeeded", None)
        emulator.clear_faults()
        assert_converged(engine, emulator)  # before: the 100 never listed missing
        assert "pull_tie_spurious_204" in [e["event"] for e in logs]


def test_a_probe_that_answers_204_too_asks_the_newest_page(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tie's page 1 and then the probe of U answer spurious 204s: the newest page shows a
    contact at U, so the 204s were spurious and page 1 is asked again."""
    with emulated(contacts=200, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second, _ = _bulk_create(emulator, 6 * PAGE)
        _marking(monkeypatch, second)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", order="id", times=TIE_ASKS)
        )
        emulator.add_fault(FaultRule(kind="empty_page", path="/api/v4/contacts", order="probe"))
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert [f["fired"] for f in emulator.faults()] == [TIE_ASKS, 1]
        assert _runs(engine)[-1] == ("succeeded", None)
        spurious = [e for e in logs if e["event"] == "pull_tie_spurious_204"]
        assert [e.get("newest") for e in spurious] == [second]
        emulator.clear_faults()
        assert_converged(engine, emulator)


@pytest.mark.parametrize("full", [False, True], ids=["pull", "full"])
def test_a_burst_of_204s_on_a_later_page_of_a_tie_is_asked_again_not_a_failure(
    db_config: DatabaseConfig, engine: Engine, full: bool
) -> None:
    """The audit's repro, scaled down (3,000 contacts, 800 touched, 250 a page): a bulk touch
    puts 80 contacts in one second T, and page 2 of its read by id answers six spurious 204s in
    a row (page 3 may take some). Page 1 by `order[id]=desc` is full and its lowest id above
    the ids read: the 204 hid contacts, so page 2 is asked again and T read whole. Before, the
    run failed at once ("amoCRM keeps answering 204 for the contacts of T", exit 1)."""
    with emulated(contacts=300, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        second = emulator.clock.now_s()
        touched = emulator.touch_contacts(count=80)
        emulator.clock.advance(2)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", order="id", min_page=2, times=6)
        )
        with capture_logs() as logs:
            report = pull(config, engine, emulator, full=full)
        assert [f["fired"] for f in emulator.faults()] == [6]
        assert _at(emulator, touched, second) == set(touched)  # nothing moved: a fault
        assert report.fetched
        assert _runs(engine)[-1] == ("succeeded", None)
        events = [e["event"] for e in logs]
        assert "pull_tie_spurious_204" in events
        assert "pull_tie_emptied" not in events
        emulator.clear_faults()
        assert_converged(engine, emulator)
