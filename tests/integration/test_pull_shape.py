"""A change of `sync.with` / `sync.chats` on an existing schema (`sync.pull.shape`): more asked
makes the next pull a full resync (until one succeeds), less asked empties what is no longer
pulled; neither left relation tables partial or stale any more."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.errors import InvariantError
from sync.pull.run import _Run
from tests.integration.pull_helpers import WITH, assert_converged, count, emulated, make_config
from tests.integration.pull_helpers import pull as pull_with

CONTACTS = 60
SHAPE = "SELECT value FROM amocrm.sync_state WHERE key = 'pull.shape'"


def _shape(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.scalar(sa.text(SHAPE))


def _warned(logs: list[dict[str, Any]], event: str) -> list[str]:
    return [e["reason"] for e in logs if e["event"] == event]


def test_more_asked_makes_the_next_pull_full_until_one_succeeds(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `with = []` and chats off first, a plain pull with the defaults filled only the
    contacts that changed (365 of 474 lead links in the audit)."""
    with emulated(contacts=CONTACTS) as (emulator, url):
        token = emulator.long_lived_token
        narrow = make_config(db_config, url, token, with_=(), chats=False)
        wide = make_config(db_config, url, token, with_=WITH, chats=True)
        with capture_logs() as logs:
            assert pull_with(narrow, engine, emulator).kind == "full"  # the first: just recorded
        assert _shape(engine) == {"with": [], "chats": False}
        assert not _warned(logs, "pull_shape_gained")
        assert count(engine, "SELECT count(*) FROM amocrm.contact_leads") == 0

        def killed(self: _Run) -> None:
            raise RuntimeError("killed midway")

        with monkeypatch.context() as patch:
            patch.setattr(_Run, "_full", killed)
            with pytest.raises(Exception, match="killed midway"):
                pull_with(wide, engine, emulator)
        assert _shape(engine) == {"with": [], "chats": False}  # not recorded: still to fill
        with capture_logs() as logs:
            assert pull_with(wide, engine, emulator).kind == "full"
        assert _warned(logs, "pull_shape_gained") == [
            "sync.with gained catalog_elements, customers, leads and sync.chats turned on: a "
            "full resync fills contact_catalog_elements, contact_customers, contact_leads, "
            "contact_chats"
        ]
        assert _shape(engine) == {"with": sorted(WITH), "chats": True}
        assert count(engine, "SELECT count(*) FROM amocrm.contact_leads") > 0
        assert_converged(engine, emulator)  # every contact's leads, customers, … and chats
        assert pull_with(wide, engine, emulator).kind == "pull"  # filled: incremental again


def test_less_asked_empties_what_is_no_longer_pulled(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """With `with = ["leads"]`, then `with = []`, the lead rows stayed forever (even after a
    lead was unlinked in amoCRM and a full resync ran). A local chat link not pushed yet stays."""
    with emulated(contacts=CONTACTS) as (emulator, url):
        token = emulator.long_lived_token
        pull_with(make_config(db_config, url, token, with_=("leads",)), engine, emulator)
        assert count(engine, "SELECT count(*) FROM amocrm.contact_leads") > 0
        assert count(engine, "SELECT count(*) FROM amocrm.contact_chats") > 0
        contact_id = min(emulator.account.contacts)
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO amocrm.contact_chats (contact_id, chat_id) VALUES (:id, :c)"),
                {"id": contact_id, "c": "00000000-0000-4000-8000-000000000001"},
            )
        bare = make_config(db_config, url, token, with_=(), chats=False)
        with capture_logs() as logs:
            assert pull_with(bare, engine, emulator).kind == "pull"
        (reason,) = _warned(logs, "pull_shape_lost")
        assert reason.startswith("sync.with lost leads and sync.chats turned off: emptied ")
        assert reason.endswith(" rows), as no longer pulled")
        assert "contact_leads (" in reason
        assert "contact_chats (" in reason
        assert _shape(engine) == {"with": [], "chats": False}
        assert count(engine, "SELECT count(*) FROM amocrm.contact_leads") == 0
        assert count(engine, "SELECT count(*) FROM amocrm.contact_chats WHERE id > 0") == 0
        assert count(engine, "SELECT count(*) FROM amocrm.contact_chats WHERE id < 0") == 1
        assert count(engine, "SELECT count(*) FROM amocrm.sync_changes") == 1  # still to push
        assert pull_with(bare, engine, emulator, full=True).kind == "full"
        assert count(engine, "SELECT count(*) FROM amocrm.contact_leads") == 0


def test_a_schema_without_a_stored_shape_is_taken_as_pulled_as_configured(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """An upgraded schema has tables but no stored shape: no surprise full resync."""
    with emulated(contacts=CONTACTS) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull_with(config, engine, emulator)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM amocrm.sync_state WHERE key = 'pull.shape'"))
        with capture_logs() as logs:
            assert pull_with(config, engine, emulator).kind == "pull"
        assert not [e for e in logs if e["event"].startswith("pull_shape")]
        assert _shape(engine) == {"with": sorted(config.sync.with_), "chats": True}


def test_the_daemons_poll_turns_full_too(db_config: DatabaseConfig, engine: Engine) -> None:
    """The daemon's incremental job (with its idle-poll memo) runs the same check."""
    from sync.daemon.run import build_jobs
    from tests.integration.amo_emulator import client_for

    with emulated(contacts=CONTACTS) as (emulator, url):
        token = emulator.long_lived_token
        pull_with(make_config(db_config, url, token, with_=("leads",)), engine, emulator)
        wide = make_config(db_config, url, token)
        with client_for(emulator, url, page_size=wide.amocrm.page_size, workers=4) as client:
            jobs = build_jobs(wide, engine, client)
            assert jobs.pull().kind == "full"
            assert jobs.pull().kind == "pull"
        assert_converged(engine, emulator)


def test_a_full_run_that_stored_everything_records_the_shape_though_its_guard_fails(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every contact was stored with what was gained when the mass-delete guard refused: the
    shape is filled, so the daemon's next polls are not each a whole-account walk."""
    with emulated(contacts=CONTACTS) as (emulator, url):
        token = emulator.long_lived_token
        pull_with(make_config(db_config, url, token, with_=(), chats=False), engine, emulator)
        wide = make_config(db_config, url, token, with_=WITH, chats=True)

        def refused(self: _Run, gone: list[int], live: int, allowed: int) -> None:
            raise InvariantError("full resync refused to mark contacts deleted")

        with monkeypatch.context() as patch:
            patch.setattr(_Run, "_guard", refused)
            with pytest.raises(Exception, match="refused to mark"):
                pull_with(wide, engine, emulator)
        assert _shape(engine) == {"with": sorted(WITH), "chats": True}
        assert pull_with(wide, engine, emulator).kind == "pull"
