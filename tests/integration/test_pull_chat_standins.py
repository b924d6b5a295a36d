"""Chat links under stand-ins that know only the documented `contact_id=N` form of
`/api/v4/contacts/chats` (amocrm-api.md §8): the array form answered with a 400, with every link
of the account, or with nothing, and answers paged with `_links.next`. `pull --full` and `pull`
against the real emulator over HTTP into PostgreSQL must leave `contact_chats` exactly equal
to the emulator's links, and the fast path (the array form, where it works) must stay one
request per batch of 250."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.chats import FEW_PROBES, PROBES, ChatForm
from sync.config import DatabaseConfig
from sync.emulator import Emulator
from sync.pull import run_pull
from tests.integration.amo_emulator import client_for
from tests.integration.pull_helpers import amo_state, assert_converged, emulated, make_config, pull

CONTACTS = 700


def _chat_requests(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r.get("path") == "/api/v4/contacts/chats"]


def _arrays(emulator: Emulator) -> int:
    return sum("contact_id[]" in str(r.get("query")) for r in _chat_requests(emulator))


def _stored_links(engine: Engine) -> set[tuple[int, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, contact_id, chat_id FROM amocrm.contact_chats"))
        return {(int(r[0]), int(r[1]), str(r[2])) for r in rows}


def _change_some(emulator: Emulator, step: int) -> None:
    """Edit a few contacts and link new chats to some of them (an incremental run's work)."""
    live = sorted(c for c in amo_state(emulator)["live"])
    emulator.clock.advance(30)
    picked = live[step::97][:6]
    emulator.update_contacts([{"id": cid, "first_name": f"Changed {step}"} for cid in picked])
    for n, cid in enumerate(picked[:3]):
        emulator.link_chat(cid, f"9a3c4f5e-0000-4000-8000-{step:06d}{n:06d}")
    emulator.clock.advance(10)


def _converged(engine: Engine, emulator: Emulator) -> None:
    assert_converged(engine, emulator)
    assert _stored_links(engine) == amo_state(emulator)["chats"]


STAND_INS: list[dict[str, Any]] = [
    {"chats_scalar_only": True},
    {"chats_array_ignored": True},
    {"chats_array_empty": True},
    {"chats_page_limit": 4},
    {"chats_array_ignored": True, "chats_page_limit": 50},
]


@pytest.mark.parametrize("controls", STAND_INS, ids=lambda c: ",".join(sorted(c)))
def test_contact_chats_are_complete_under_each_stand_in(
    db_config: DatabaseConfig, engine: Engine, controls: dict[str, Any]
) -> None:
    with emulated(contacts=CONTACTS) as (emulator, url):
        emulator.set_controls(**controls)
        config = make_config(db_config, url, emulator.long_lived_token, page_size=100)
        assert len(amo_state(emulator)["chats"]) > 10  # the seed links some contacts
        pull(config, engine, emulator, full=True)
        _converged(engine, emulator)
        fallback = set(controls) != {"chats_page_limit"}  # pages alone: the array form works
        tried = _arrays(emulator)  # batches sent side by side before the first answer
        assert 1 <= tried <= (config.sync.pull_workers if fallback else tried)
        for step in (1, 2):
            _change_some(emulator, step)
            pull(config, engine, emulator)
            _converged(engine, emulator)
        _change_some(emulator, 3)
        pull(config, engine, emulator, full=True)
        _converged(engine, emulator)
        if fallback:
            # then never again: the clients of one server in a process share what was learnt
            assert _arrays(emulator) == tried


def test_the_fast_path_stays_one_array_request_per_250_contacts(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=CONTACTS) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=100)
        report = pull(config, engine, emulator, full=True)
        chats = _chat_requests(emulator)
        assert all("contact_id[]" in str(r["query"]) for r in chats)
        assert len(chats) <= math.ceil(report.fetched / 250) + 3
        _converged(engine, emulator)


def _fresh_process_pull(config: Any, engine: Engine, emulator: Emulator) -> None:
    """A pull as a new process runs it: a client that has learnt nothing of the chats forms."""
    client = client_for(
        emulator, config.amocrm.base_url, page_size=config.amocrm.page_size, chat_form=ChatForm()
    )
    with client:
        run_pull(config, engine, client)


def test_a_proven_array_form_is_remembered_so_later_runs_send_no_probes(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=CONTACTS) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=100)
        pull(config, engine, emulator, full=True)
        with engine.connect() as conn:
            sql = "SELECT value FROM amocrm.sync_state WHERE key = 'amo.chats_form'"
            assert conn.scalar(sa.text(sql)) == {"form": "batched", "base_url": url}
        linked = {c[1] for c in amo_state(emulator)["chats"]}
        quiet = [cid for cid in sorted(amo_state(emulator)["live"]) if cid not in linked][:5]
        emulator.clock.advance(30)
        emulator.update_contacts([{"id": cid, "first_name": "No chats"} for cid in quiet])
        emulator.clock.advance(10)
        emulator.clear_requests()
        _fresh_process_pull(config, engine, emulator)
        # five contacts without links: one array request; unproven, each would be asked again
        assert len(_chat_requests(emulator)) == 1
        _converged(engine, emulator)


def _singles(emulator: Emulator) -> int:
    return len(_chat_requests(emulator)) - _arrays(emulator)


def _change(emulator: Emulator, ids: list[int], name: str) -> None:
    emulator.clock.advance(30)
    emulator.update_contacts([{"id": c, "first_name": name} for c in ids])
    emulator.clock.advance(10)
    emulator.clear_requests()


def test_an_account_without_chats_pays_the_probes_once_not_in_every_process(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """An audit's stand-in without chats: each process re-asked up to 50 contacts one by one
    (`pull --full`: 4 array + 50 single requests, then 1 + N each incremental run)."""
    with emulated(contacts=600, seed_chat_links=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=250)
        emulator.clear_requests()
        client = client_for(emulator, url, page_size=250, chat_form=ChatForm())
        with client:
            run_pull(config, engine, client, full=True)
        assert _singles(emulator) == PROBES  # a new schema's empty table proves nothing
        live = sorted(amo_state(emulator)["live"])
        for step in (1, 2):  # each a new process: the probes were spent for the origin
            _change(emulator, live[step * 20 : step * 20 + 20], f"Step {step}")
            _fresh_process_pull(config, engine, emulator)
            assert _singles(emulator) == 0, step
        # a schema whose probes were never counted (an older amosync): after its first pull
        # the account shows no link, so a process takes only a few
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM amocrm.sync_state WHERE key = 'amo.chats_form'"))
        for step in (3, 4):
            _change(emulator, live[step * 20 : step * 20 + 20], f"Step {step}")
            _fresh_process_pull(config, engine, emulator)
            assert _singles(emulator) == FEW_PROBES, step
        # the account links a chat: probes spent where none could find a link are forgiven
        emulator.link_chat(live[500], "9a3c4f5e-0000-4000-8000-000000000001")
        _change(emulator, [live[500]], "Linked")
        _fresh_process_pull(config, engine, emulator)
        _change(emulator, live[400:420], "Again")
        _fresh_process_pull(config, engine, emulator)
        assert _singles(emulator) == 20  # every contact of the batch probed again
        _converged(engine, emulator)
