"""Chat links asked for in batches of up to 250 contacts across pages (`sync.pull.complete`): a
page's links arrive with a batch that may be sent pages later, or with two batches; the page,
its links and the cursor position it proves still go into one transaction, so a run that dies
before a batch answers has stored no contact of it, and its stored cursor claims none of them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import Emulator
from sync.errors import AmoError
from sync.pull import run_pull
from tests.integration.amo_emulator import client_for
from tests.integration.pull_helpers import amo_state, assert_converged, emulated, make_config, pull

PAGE = 60  # pages of 60: a batch of 250 holds parts of five pages, most pages wait for a later one


def _chat_requests(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r.get("path") == "/api/v4/contacts/chats"]


def _list_requests(emulator: Emulator) -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.requests()
        if r.get("path") == "/api/v4/contacts" and "filter[id]" not in str(r.get("query", ""))
    ]


def test_chat_links_land_with_the_batch_that_holds_their_page(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=1500) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        report = pull(config, engine, emulator, full=True)
        chats, lists = _chat_requests(emulator), _list_requests(emulator)
        sizes = [str(r.get("query", "")).count("contact_id") for r in chats]
        assert max(sizes) <= 250
        # one request per 250 contacts, plus a part-full batch where the walk drained; it was
        # one request per page of 60 before
        assert len(chats) <= math.ceil(report.fetched / 250) + 3 < len(lists)
        assert any(amo_state(emulator)["chats"])  # the seed links some contacts to chats
        assert_converged(engine, emulator)  # every contact's links, whichever batch had them


def _stored(engine: Engine) -> dict[int, int]:
    sql = "SELECT id, extract(epoch FROM updated_at)::bigint FROM amocrm.contacts"
    with engine.connect() as conn:
        return {int(cid): int(at) for cid, at in conn.execute(sa.text(sql))}


def _stored_chats(engine: Engine) -> set[tuple[Any, ...]]:
    sql = "SELECT id, contact_id, chat_id FROM amocrm.contact_chats"
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.text(sql))}


def _cursor(engine: Engine) -> dict[str, Any]:
    sql = "SELECT value FROM amocrm.sync_state WHERE key = 'pull.contacts'"
    with engine.connect() as conn:
        return dict(conn.scalar(sa.text(sql)) or {})


def _claimed(state: dict[str, Any], at: int, overlap: int) -> bool:
    """Whether the stored cursor says the version at `at` is stored: below the cursor, or below
    what the next run re-reads of the head and in no window left to read."""
    if at < int(state["updated_at"]):
        return True
    left = [(int(lo), hi) for lo, hi in state.get("windows") or []]
    inside = any(lo <= at and (hi is None or at < int(hi)) for lo, hi in left)
    return at < int(state["ceiling"]) - overlap and not inside


def test_a_run_that_dies_before_a_batch_answers_claims_none_of_its_contacts(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=2000) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=PAGE)
        client = client_for(emulator, url, page_size=PAGE, workers=4)
        real, asked = client.iter_chats, []

        def dies_at_the_fourth(**kw: Any) -> Any:  # what the sink sees of a kill -9 there
            asked.append(kw)
            if len(asked) >= 4:
                # die once the sink has committed a page of the first batches: a kill mid-walk,
                # not one before anything was stored (the sink races the fetch stage otherwise)
                deadline = time.monotonic() + 10
                while not _stored(engine) and time.monotonic() < deadline:
                    time.sleep(0.02)
                raise AmoError("chat links: the process died here")
            return real(**kw)

        client.iter_chats = dies_at_the_fourth  # type: ignore[method-assign]
        with client, pytest.raises(AmoError):
            run_pull(config, engine, client, full=True)
        stored, state, want = _stored(engine), _cursor(engine), amo_state(emulator)
        assert 0 < len(stored) < len(want["live"])  # it died mid-walk, some pages stored
        # every stored contact came with its chat links, none without
        links = {c for c in want["chats"] if c[1] in stored}
        assert _stored_chats(engine) == links
        # the cursor claims no contact that is not stored
        overlap = config.sync.overlap_s
        unclaimed_ok = [
            cid
            for cid, data in want["live"].items()
            if _claimed(state, int(data["updated_at"]), overlap) and cid not in stored
        ]
        assert not unclaimed_ok, f"claimed but not stored: {unclaimed_ok[:10]}"
        pull(config, engine, emulator)  # the next run resumes and converges
        assert_converged(engine, emulator)
