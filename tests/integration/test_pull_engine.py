"""Issue 12's read engine against the emulator (real HTTP) and a real PostgreSQL: a full resync
that exits 0 holds every contact that existed throughout it, whatever is deleted, restored or
edited meanwhile; a second with more contacts than a page costs about one read, once; filters
off; a token that dies mid-walk.

amoCRM's clock is set behind ours where a test counts requests: the changes are then in the
past when the pull starts, as on a real account (a clock running ahead of ours only costs
re-reads, which these tests count).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import Config, DatabaseConfig, SyncConfig
from sync.db.tokens import TokenStore
from sync.emulator import Emulator, FaultRule
from sync.pull import run_pull
from sync.pull.fetch import SPECULATIVE
from tests.integration.amo_emulator import FAST_BACKOFF, amo_config, oauth_config
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull
from tests.integration.test_amo_auth import TOKEN_PATH, seed
from tests.integration.test_amo_token_expiry import SendRecorder

BEHIND = {"clock_start": time.time() - 600}  # amoCRM's clock ten minutes behind ours


def _live(emulator: Emulator) -> set[int]:
    with emulator.account.lock:
        return {c.id for c in emulator.account.contacts.values() if not c.is_deleted}


def _event_ids(emulator: Emulator) -> set[str]:
    with emulator.account.lock:
        return {e.id for e in emulator.account.events}


def _deleted_since(emulator: Emulator, before: set[str]) -> set[int]:
    with emulator.account.lock:
        return {
            e.entity_id
            for e in emulator.account.events
            if e.id not in before and e.type == "contact_deleted"
        }


def _stored_live(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.text("SELECT id FROM amocrm.contacts WHERE NOT is_deleted")))


def _lists(emulator: Emulator) -> list[str]:
    return [
        str(r["query"])
        for r in emulator.requests()
        if r["path"] == "/api/v4/contacts" and "filter[id]" not in str(r["query"])
    ]


def _by_id_order(queries: list[str]) -> list[str]:
    return [q for q in queries if "order[id]" in q]


FAULTS = {
    "vanish": [FaultRule(kind="vanish", path="/api/v4/contacts", times=None, rate=0.3, touch=1)],
    "revive": [FaultRule(kind="revive", path="/api/v4/contacts", times=None, rate=0.3, touch=1)],
    "drift": [FaultRule(kind="drift", path="/api/v4/contacts", times=None, rate=0.3, touch=3)],
    "all": [
        FaultRule(kind="vanish", path="/api/v4/contacts", times=None, rate=0.15, touch=1),
        FaultRule(kind="revive", path="/api/v4/contacts", times=None, rate=0.15, touch=1),
        FaultRule(kind="drift", path="/api/v4/contacts", times=None, rate=0.15, touch=2),
    ],
}


@pytest.mark.parametrize("faults", sorted(FAULTS))
def test_a_full_resync_holds_every_contact_that_existed_throughout(
    db_config: DatabaseConfig, engine: Engine, faults: str
) -> None:
    settings = {"contacts": 2500, "trashed_fraction": 0.05, "tie_break": "shuffle", **BEHIND}
    with emulated(**settings) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=40)
        # a bulk edit: one second with more contacts than a page, read by id
        emulator.update_contacts(
            [{"id": i, "last_name": "Bulk"} for i in sorted(_live(emulator))[:150]]
        )
        emulator.clock.advance(5)
        before, events = _live(emulator), _event_ids(emulator)
        for rule in FAULTS[faults]:
            emulator.add_fault(rule)
        with capture_logs() as logs:
            report = pull(config, engine, emulator)  # the first run: a full resync
        fired = sum(int(f["fired"]) for f in emulator.faults())
        emulator.clear_faults()
        assert report.kind == "full"
        assert fired >= 5  # the faults really hit the walk
        throughout = (before & _live(emulator)) - _deleted_since(emulator, events)
        missing = throughout - _stored_live(engine)
        assert not missing, f"{len(missing)} contacts that existed throughout are not stored"
        assert "pull_cursor_held" not in [e["event"] for e in logs]
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_a_deletion_and_restore_in_one_second_is_settled_by_asking_amocrm(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """Event ids do not order events inside one second: a contact deleted and restored (or
    restored and deleted) in the same second is read by id, never guessed from the list."""
    with emulated(contacts=300, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        flips = sorted(_live(emulator))[:24]
        emulator.clock.freeze()
        for contact in flips:  # each in one second, the trash's ids in random order
            emulator.delete_contact(contact)
            emulator.restore_contact(contact)
        for contact in flips[::2]:  # half of them end in the trash, in the same second
            emulator.delete_contact(contact)
        emulator.clock.unfreeze()
        emulator.clock.advance(5)
        report = pull(config, engine, emulator)
        assert report.deleted == len(flips[::2])
        assert_converged(engine, emulator)


@pytest.mark.parametrize("tie_break", ["asc", "desc", "shuffle"])
def test_a_bulk_second_is_read_about_once_and_never_again(
    db_config: DatabaseConfig, engine: Engine, tie_break: str
) -> None:
    with emulated(contacts=800, tie_break=tie_break, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        bulk = sorted(_live(emulator))[:300]
        second = emulator.update_contacts([{"id": i, "first_name": f"Bulk {i}"} for i in bulk])
        emulator.clock.advance(5)  # older than the lists' lag when the pull starts
        emulator.clear_requests()
        report = pull(config, engine, emulator)
        assert_converged(engine, emulator)
        pages = math.ceil(300 / 25)
        by_id = _by_id_order(_lists(emulator))
        assert pages <= len(by_id) <= pages + SPECULATIVE + 1  # not "until two passes agree"
        assert report.fetched <= 300 + 2 * 25  # about one read of the second
        # the next run: the settled second is not read again (only the overlap's other seconds)
        emulator.clear_requests()
        again = pull(config, engine, emulator)
        assert _by_id_order(_lists(emulator)) == []
        assert again.fetched < 25
        lists = _lists(emulator)
        # the overlap below it is read as without a tie (a version listed late there is found):
        # [C - overlap_s, U) and [U + 1, ∞), each a 204 here and its probe (one page each)
        assert any(f"[to]={second - 1}&" in q for q in lists), lists
        assert len(lists) <= 4, lists


@pytest.mark.parametrize("kind", ["drift", "vanish"])
def test_a_tie_shaken_while_it_is_read_is_read_again_and_nothing_is_lost(
    db_config: DatabaseConfig, engine: Engine, kind: str
) -> None:
    with emulated(contacts=500, trashed_fraction=0.0, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        bulk = sorted(_live(emulator))[:200]
        emulator.update_contacts([{"id": i, "last_name": "Tie"} for i in bulk])
        emulator.clock.advance(2)
        # pages 2+ of the read by id: a user edits (drift) or deletes (vanish) the first
        # contacts of that second first, shifting every later one towards earlier pages
        rule = FaultRule(kind="drift", path="/api/v4/contacts", min_page=2, times=3, touch=2)
        emulator.add_fault(rule if kind == "drift" else replace(rule, kind="vanish"))
        with capture_logs() as logs:
            pull(config, engine, emulator)
        (reverified,) = {e["log_level"] for e in logs if e["event"] == "pull_tie_reverified"}
        assert reverified == "info"  # ordinary on a live account: no operator acts on it
        assert_converged(engine, emulator)


def test_ties_read_while_nothing_changes_are_not_read_again(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=500, **BEHIND) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        emulator.update_contacts(
            [{"id": i, "last_name": "Tie"} for i in sorted(_live(emulator))[:120]]
        )
        emulator.clock.advance(2)
        with capture_logs() as logs:
            pull(config, engine, emulator)
        events = [e["event"] for e in logs]
        assert "pull_tie_read" in events
        assert "pull_tie_reverified" not in events
        assert_converged(engine, emulator)


def test_filters_off_full_and_incremental_fall_back_and_converge(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=400, api_filter_enabled=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=40)
        full = pull(config, engine, emulator)
        assert full.mode == "full-by-id"
        emulator.clock.advance(20)
        emulator.update_contacts([{"id": i, "name": "Off"} for i in sorted(_live(emulator))[:90]])
        incremental = pull(config, engine, emulator)
        assert incremental.mode == "descending"
        assert_converged(engine, emulator)


def _oauth_config(db: DatabaseConfig, url: str, emulator: Emulator) -> Config:
    amo = amo_config(url, oauth=oauth_config(emulator), page_size=40)
    return Config(amocrm=amo, database=db, sync=SyncConfig(overlap_s=5, pull_workers=4))


def test_a_token_that_dies_mid_walk_is_refreshed_and_the_walk_completes(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(
        contacts=1500, auth_mode="oauth", token_max_requests=15, latency_ms=5, **BEHIND
    ) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        config = _oauth_config(db_config, url, emulator)

        def run(**kw: Any) -> Any:
            client = AmoClient.connect(
                config.amocrm,
                token_storage=TokenStore(engine),
                limiter=RateLimiter(config.amocrm.max_rps, margin_s=0.0),
                backoff=Backoff(**FAST_BACKOFF),
                workers=4,
            )
            with client:
                return run_pull(config, engine, client, **kw)

        full = run()
        emulator.clock.advance(20)
        emulator.update_contacts([{"id": i, "name": "Late"} for i in sorted(_live(emulator))[:400]])
        run()
        refused = [r for r in emulator.requests() if r["status"] == 401]
        assert refused  # the knob bit, more than once
        assert full.kind == "full"
        assert_converged(engine, emulator)


def test_a_401_while_the_preamble_is_out_refreshes_once_and_never_resends_a_dead_token(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The preamble leaves once the first request's headers are written, before any answer:
    the token can die with several requests out. Each dead token is refreshed once, and no
    request leaves with a token whose 401 the client had read."""
    with emulated(contacts=600, auth_mode="oauth", latency_ms=30, **BEHIND) as (emulator, url):
        seed(engine, emulator.issue_tokens())
        emulator.expire_access_tokens()  # amoCRM refuses the stored token: its refresh works
        config = _oauth_config(db_config, url, emulator)
        recorder = SendRecorder()
        client = AmoClient.connect(
            config.amocrm,
            token_storage=TokenStore(engine),
            limiter=RateLimiter(config.amocrm.max_rps, margin_s=0.0),
            backoff=Backoff(**FAST_BACKOFF),
            transport=recorder,
            workers=4,
        )
        with client:
            report = run_pull(config, engine, client, full=True)
        log = emulator.requests()
    assert report.kind == "full"
    assert recorder.sent_after_refusal() == []
    refused = [token for kind, token in recorder.events if kind == "refused"]
    assert len(set(refused)) == 1
    assert len([r for r in log if r["path"] == TOKEN_PATH]) == 1  # one refresh
    # the first request and the preamble that left beside it, before the 401 was read
    assert 1 <= len(refused) <= 5
    assert_converged(engine, emulator)
