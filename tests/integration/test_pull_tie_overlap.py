"""A settled tie second leaves the rest of the overlap alone (emulator over HTTP, real PostgreSQL).

After a pull reads a bulk-edit second U by id and settles it (`tie_settled`), later incremental
pulls never read U again, but still read the overlap below it: a version that amoCRM lists late
(its list lags writes) a few seconds before U is read by the next pull, as it would be without
the bulk second. The emulator's retroactive `updated_at` stands in for the lagging list: the
edit appears in the list only now, at a second the previous pull had already read. Until
2026-12-07 the spans started after U, and only `pull --full` found such a version (audit).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.runs import CONTACTS_CURSOR, RunStore
from sync.emulator import Emulator
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull

OVERLAP_S = 60
BEFORE_S = 10  # how far before U the late version lies: well inside the overlap


def _state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        state = RunStore("amocrm").get_state(conn, CONTACTS_CURSOR)
    assert state is not None
    return state


def _filtered_reads(emulator: Emulator) -> list[tuple[int, int | None, bool]]:
    """The `updated_at` range of every list request by date (from, to or None, by id?); the
    newest page (no filter: one page, the probe of a 204) reads no second through."""
    ranges = []
    for request in emulator.requests():
        query = dict(parse_qsl(str(request["query"])))
        low = query.get("filter[updated_at][from]")
        if request["path"] != "/api/v4/contacts" or low is None:
            continue
        high = query.get("filter[updated_at][to]")
        ranges.append((int(low), None if high is None else int(high), "order[id]" in query))
    return ranges


@pytest.mark.parametrize("killed", [False, True], ids=["after-a-run", "after-a-killed-run"])
def test_a_late_version_below_a_settled_tie_second_is_read_by_the_next_pull(
    db_config: DatabaseConfig, engine: Engine, killed: bool
) -> None:
    with emulated(contacts=400) as (emulator, url):
        config = make_config(
            db_config, url, emulator.long_lived_token, page_size=25, overlap_s=OVERLAP_S
        )
        pull(config, engine, emulator)
        with emulator.account.lock:
            ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
        emulator.clock.advance(30)
        second = emulator.update_contacts([{"id": i, "last_name": "Bulk"} for i in ids[:200]])
        emulator.clock.advance(5)  # U is older than SETTLE_S when the next run starts
        pull(config, engine, emulator)
        state = _state(engine)
        assert state["tie_settled"] == second, state
        if killed:  # as a run killed before its first page leaves it (its `store_initial`)
            cursor = int(state["updated_at"])
            state = {**state, "windows": [[cursor, None]], "ceiling": cursor}
            with engine.begin() as conn:
                RunStore("amocrm").set_state(conn, CONTACTS_CURSOR, state)
        late = [{"id": i, "last_name": "LateBeforeU"} for i in ids[250:255]]
        emulator.update_contacts(late, at=second - BEFORE_S)
        emulator.clear_requests()
        pull(config, engine, emulator)
        assert_converged(engine, emulator)  # main: 5 contacts keep their old last_name
        reads = _filtered_reads(emulator)
        assert not [r for r in reads if r[2]], "the settled bulk second was read by id again"
        again = [r for r in reads if r[0] <= second and (r[1] is None or r[1] >= second)]
        assert not again, f"a list request read the settled second {second} again: {again}"
