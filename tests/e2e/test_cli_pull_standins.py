"""CONTRACT under another faithful stand-in: `amosync pull --full` and `amosync pull` exit 0
with every live contact stored, or fail; never exit 0 with contacts missing. Each emulator
control gives one answer the vendor documents allow (amocrm-api.md §2): `next` on an exactly
full last page, an empty list as 200, no `next` at all, `next` on some pages only, integers as
numeric strings, events oldest first or scrambled. 500 contacts in one second make a tie of
exactly two default pages (250), the audit's case."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import Emulator
from tests.e2e.cli import amosync
from tests.integration.pull_helpers import emulated


def _env(db: DatabaseConfig, url: str, token: str) -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": token,
        "AMOSYNC_AMOCRM__MAX_RPS": "1000",
        "AMOSYNC_LOGGING__LEVEL": "warning",
    }


def _live(emulator: Emulator) -> set[int]:
    with emulator.account.lock:
        return {c.id for c in emulator.account.contacts.values() if not c.is_deleted}


def _stored(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id FROM amocrm.contacts WHERE NOT is_deleted"))
        return {int(r[0]) for r in rows}


@pytest.mark.parametrize(
    "control",
    ["never_next", "next_on_full_page", "empty_list_as_200", "next_gaps", "string_numbers"],
)
def test_pull_stores_every_contact_under_each_stand_in(
    db_config: DatabaseConfig, engine: Engine, control: str
) -> None:
    with emulated(contacts=1185, trashed_fraction=0.0) as (emulator, url):
        ids = sorted(_live(emulator))[:500]
        emulator.update_contacts([{"id": i, "last_name": f"Bulk {i}"} for i in ids])
        emulator.clock.advance(5)
        emulator.set_controls(**{control: True})
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        for args in (("pull", "--full"), ("pull",)):
            result = amosync(*args, env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            assert _stored(engine) == _live(emulator)


def _links(engine: Engine) -> set[tuple[int, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, contact_id, chat_id FROM amocrm.contact_chats"))
        return {(int(r[0]), int(r[1]), str(r[2])) for r in rows}


def _amo_links(emulator: Emulator) -> set[tuple[int, int, str]]:
    with emulator.account.lock:
        return {
            (c.id, c.contact_id, c.chat_id)
            for c in emulator.account.chat_links.values()
            if emulator.account.live(c.contact_id) is not None
        }


@pytest.mark.parametrize(
    "control", ["chats_scalar_only", "chats_array_ignored", "chats_array_empty"]
)
def test_pull_stores_every_chat_link_when_only_contact_id_n_is_understood(
    db_config: DatabaseConfig, engine: Engine, control: str
) -> None:
    """A stand-in that knows only the documented `contact_id=N` of /contacts/chats: each process
    says once, in one warning line, that it falls back to one request per contact, and exits 0
    with `contact_chats` equal to the server's links."""
    with emulated(contacts=600, trashed_fraction=0.0) as (emulator, url):
        emulator.set_controls(**{control: True})
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        for step, args in enumerate((("pull", "--full"), ("pull",))):
            changed = sorted(_live(emulator))[step * 7 :: 50]
            emulator.clock.advance(30)
            emulator.update_contacts([{"id": i, "last_name": f"Edit {step}"} for i in changed])
            emulator.link_chat(changed[0], f"9a3c4f5e-0000-4000-8000-00000000000{step}")
            emulator.clock.advance(5)
            result = amosync(*args, env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            said = result.stdout + result.stderr
            assert said.count("amo_chats_array_form_not_honoured") == 1, said[-2000:]
            assert _stored(engine) == _live(emulator)
            assert _links(engine) == _amo_links(emulator)


def _deleted(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id FROM amocrm.contacts WHERE is_deleted"))
        return {int(r[0]) for r in rows}


@pytest.mark.parametrize("order", ["asc", "shuffle"])
def test_pull_applies_deletions_and_restores_whatever_the_events_order(
    db_config: DatabaseConfig, engine: Engine, order: str
) -> None:
    """Filters off (events unfiltered too), more than a page of older events: before the fix,
    oldest first, `amosync pull` exited 0 with the new deletions not applied."""
    with emulated(contacts=400, trashed_fraction=0.0) as (emulator, url):
        for cid in sorted(_live(emulator))[100:240]:  # 280 older events: two pages
            emulator.delete_contact(cid)
            emulator.restore_contact(cid)
        emulator.clock.advance(400)
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        assert amosync("pull", env=env).returncode == 0
        emulator.delete_contact(sorted(_live(emulator))[300])
        emulator.clock.advance(1)
        # the events cursor now less `sync.overlap_s` (300) is past the 280 older events
        assert amosync("pull", env=env).returncode == 0
        emulator.set_controls(api_filter_enabled=False, events_order=order)
        a, b, c = sorted(_live(emulator))[:3]
        emulator.clock.advance(5)
        for cid in (a, b, c):
            emulator.delete_contact(cid)
        emulator.clock.advance(2)
        emulator.restore_contact(b)
        emulator.clock.advance(2)
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert _stored(engine) == _live(emulator)
        assert {a, c} <= _deleted(engine)
        assert b not in _deleted(engine)


def test_a_garbage_integer_is_one_error_line_naming_the_contact_and_field(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=60, trashed_fraction=0.0) as (emulator, url):
        cid = sorted(_live(emulator))[7]
        with emulator.account.lock:
            emulator.account.contacts[cid].updated_by = "nobody"  # type: ignore[assignment]
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        result = amosync("pull", "--full", env=env)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert f"contact {cid}: updated_by is not an integer: 'nobody'" in result.stderr


def test_pull_reads_past_a_full_page_without_next_after_pages_with_it(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """`next_gaps` (`next` on odd pages only) and a second of 800 contacts, four pages: before
    the fix its read ended after page 2 and `amosync pull --full` exited 0 with contacts missing."""
    with emulated(contacts=1185, trashed_fraction=0.0) as (emulator, url):
        ids = sorted(_live(emulator))[:800]
        emulator.update_contacts([{"id": i, "last_name": f"Bulk {i}"} for i in ids])
        emulator.clock.advance(5)
        emulator.set_controls(next_gaps=True)
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        for args in (("pull", "--full"), ("pull",)):
            result = amosync(*args, env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            assert _stored(engine) == _live(emulator)
