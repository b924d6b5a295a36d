"""CONTRACT under another faithful stand-in: `amosync pull --full` and `amosync pull` exit 0
with every live contact stored, or fail; never exit 0 with contacts missing. Each emulator
control gives one answer the vendor documents allow (amocrm-api.md §2): `next` on an exactly
full last page, an empty list as 200, no `next` at all. 500 contacts in one second make a tie of
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


@pytest.mark.parametrize("control", ["never_next", "next_on_full_page", "empty_list_as_200"])
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
