"""Every settled tie second in the overlap stays unread, not only the newest (emulator over HTTP,
real PostgreSQL).

The soak audit (2026-12-08): bulk edits of 1,000 contacts every ~4 minutes with `overlap_s` 300.
The cursor state kept one settled second (`tie_settled`, the newest), so once a second bulk
second settled, the first one, still inside the overlap, was read again as a tie by every pull
until the cursor had moved `overlap_s` past it: ~20 requests and 1,400-1,700 contacts a pull for
minutes, on every leader (each run starts from `sync_state`). Now every settled second within
the overlap is stored and skipped. Each `pull` here is a new run with no memory but
`sync_state`, as a new leader's first poll after a takeover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.runs import CONTACTS_CURSOR, RunStore
from sync.emulator import Emulator
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull

OVERLAP_S = 120
BULK = 200  # contacts of each bulk second: 8 pages of 25, a tie


def _state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        state = RunStore("amocrm").get_state(conn, CONTACTS_CURSOR)
    assert state is not None
    return state


def _contact_reads(emulator: Emulator) -> list[dict[str, str]]:
    return [
        dict(parse_qsl(str(r["query"])))
        for r in emulator.requests()
        if r["path"] == "/api/v4/contacts" and r["method"] == "GET"
    ]


def _reads_second(query: dict[str, str], second: int) -> bool:
    """A window's read through `second`. A probe of an empty window (from its start, no upper
    bound, one page: `sync.pull.empty`) proves a 204 and reads no second through."""
    low, high = query.get("filter[updated_at][from]"), query.get("filter[updated_at][to]")
    return low is not None and high is not None and int(low) <= second <= int(high)


def test_an_older_settled_tie_second_is_not_read_again_after_a_newer_one_settles(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=600) as (emulator, url):
        config = make_config(
            db_config, url, emulator.long_lived_token, page_size=25, overlap_s=OVERLAP_S
        )
        pull(config, engine, emulator)
        with emulator.account.lock:
            ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
        seconds = []
        for n in range(2):  # two bulk seconds 30 s apart: both stay inside the overlap
            emulator.clock.advance(30)
            bulk = [{"id": i, "last_name": f"Bulk{n}"} for i in ids[n * BULK : (n + 1) * BULK]]
            seconds.append(emulator.update_contacts(bulk))
            emulator.clock.advance(5)  # older than SETTLE_S when the next run starts
            pull(config, engine, emulator)
        state = _state(engine)
        emulator.clock.advance(5)
        emulator.update_contacts([{"id": ids[-1], "last_name": "Later"}])
        emulator.clock.advance(5)
        emulator.clear_requests()
        pull(config, engine, emulator)
        assert_converged(engine, emulator)
        reads = _contact_reads(emulator)
        again = [q for q in reads if any(_reads_second(q, s) for s in seconds)]
        by_id = [q for q in reads if "order[id]" in q]
        # main: 15 contacts reads, 9 of them by id (the first bulk second a tie again)
        assert not again, f"a settled bulk second was listed again: {again}"
        assert not by_id, f"a settled bulk second was read by id again: {by_id}"
        # the overlap's three windows (below, between and above the two seconds), the two
        # empty ones each proved by a probe
        assert len(reads) <= 5, reads
        assert state["tie_settled"] == seconds[1], state  # what older code reads, unchanged
        assert state["ties_settled"] == seconds, state
