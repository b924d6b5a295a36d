"""Upgrading in place loses nothing. A database made by the previous release (commit 6d7e778,
revision 0002) with that release's own code — its `db upgrade`, `pull --full` and `push`, run
from its tree in git — holds a conflict waiting for a person, pending local edits and pending
creates (captured by that release's triggers). Today's `amosync db upgrade` then `amosync push`
send exactly those edits and creates, leave the conflict waiting, and the schema ends
identical to a fresh install's, object by object.

The old release's tree comes from the repository's history (`git archive`): CI works on a full
clone. Without that commit (a shallow clone) the test fails and says so; it never skips."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sync.config import DatabaseConfig
from sync.db.migrate import head_revision
from sync.emulator import Emulator
from tests.integration.amo_emulator import running
from tests.integration.schema_catalog import differences, fresh_install, schema_of

from .cli import amosync, clean_env

RELEASE = "6d7e778"
RELEASE_REVISION = "0002"
CHECKOUT = Path(__file__).resolve().parents[2]


def old_release(into: Path) -> Path:
    """The previous release's `sync/` package, as committed, in `into`."""
    done = subprocess.run(
        ["git", "-C", str(CHECKOUT), "archive", "--format=tar", RELEASE, "sync"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (
        f"the previous release ({RELEASE}) is not in this clone's history "
        f"(a shallow clone? `git fetch --unshallow`): {done.stderr.decode().strip()}"
    )
    with tarfile.open(fileobj=BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


def write_config(path: Path, base_url: str, token: str, db: DatabaseConfig) -> Path:
    path.write_text(
        f"""
[amocrm]
base_url = "{base_url}"
access_token = "{token}"
max_rps = 50
batch_size = 10
timeout_s = 10

[database]
url = "{db.url.reveal()}"
schema = "{db.schema}"

[sync]
conflict_policy = "manual"
chats = false

[logging]
format = "json"
""",
        encoding="utf-8",
    )
    return path


class OldRelease:
    """The previous release's `amosync`, run from its own tree."""

    def __init__(self, tree: Path, config: Path) -> None:
        self.tree, self.config = tree, config

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.tree,  # first on sys.path: `sync` is the old release's
            env=clean_env({"PYTHONPATH": str(self.tree)}),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def amosync(self, *args: str) -> str:
        done = self.python("-m", "sync", "--config", str(self.config), *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


class Database:
    def __init__(self, db: DatabaseConfig) -> None:
        self.engine = sa.create_engine(make_url(db.url.reveal()))

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """A local edit or a look, as a person would run it in psql."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
            result = conn.execute(sa.text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []


def sent(emulator: Emulator, method: str) -> list[dict[str, Any]]:
    """Every contact body of every `method /api/v4/contacts` amoCRM received."""
    return [
        item
        for r in emulator.requests()
        if r["method"] == method and r["path"] == "/api/v4/contacts"
        for item in r["body"]
    ]


def fields(item: dict[str, Any]) -> dict[str, Any]:
    """A contact body without its id and the client's own correlation id."""
    return {k: v for k, v in item.items() if k not in ("id", "request_id")}


@pytest.mark.slow
def test_a_database_of_the_previous_release_upgrades_in_place_and_loses_nothing(
    blank_db_config: DatabaseConfig, other_blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    tree = old_release(tmp_path / "release")
    with running(contacts=8, trashed_fraction=0.0) as (emulator, url):
        config = write_config(
            tmp_path / "amosync.toml", url, emulator.long_lived_token, blank_db_config
        )
        old = OldRelease(tree, config)
        where = old.python("-c", "import sync.db.migrate as m; print(m.__file__)")
        assert where.stdout.startswith(str(tree)), where  # really the old code
        db = Database(blank_db_config)
        try:
            _make_the_old_database(old, db, emulator)
            _upgrade_and_push(config, db, emulator)
        finally:
            db.engine.dispose()
    diff = differences(schema_of(blank_db_config), fresh_install(other_blank_db_config))
    assert not diff, "the upgraded schema differs from a fresh install:\n" + diff


def _make_the_old_database(old: OldRelease, db: Database, emulator: Emulator) -> None:
    """What a user of the previous release had: a conflict waiting, then more local edits and
    two new contacts, none pushed yet."""
    assert f"to {RELEASE_REVISION}" in old.amosync("db", "upgrade")
    old.amosync("pull", "--full")
    ids = sorted(emulator.account.contacts)
    disputed, edited, renamed = ids[0], ids[1], ids[2]
    db.sql("UPDATE contacts SET name = 'ours' WHERE id = :id", id=disputed)
    emulator.update_contacts([{"id": disputed, "name": "theirs"}])
    old.amosync("push")  # the previous release finds the conflict and holds it (manual)
    assert db.sql("SELECT contact_id, field, winner, resolved_at FROM sync_conflicts") == [
        (disputed, "name", None, None)
    ]
    db.sql("UPDATE contacts SET name = 'Edited Name', last_name = 'Edited' WHERE id = :id",
           id=edited)  # fmt: skip
    db.sql("UPDATE contacts SET name = 'Renamed' WHERE id = :id", id=renamed)
    phone = json.dumps([{"field_code": "PHONE", "values": [{"value": "+7 900 000-00-01"}]}])
    db.sql(
        "INSERT INTO contacts (name, first_name, custom_fields_values) "
        "VALUES ('New One', 'One', CAST(:cf AS jsonb)), ('New Two', NULL, NULL)",
        cf=phone,
    )
    pending = db.sql("SELECT kind, count(*) FROM sync_changes GROUP BY kind ORDER BY kind")
    assert ("create", 2) in pending
    emulator.clear_requests()


def _upgrade_and_push(config: Path, db: Database, emulator: Emulator) -> None:
    ids = sorted(emulator.account.contacts)
    disputed, edited, renamed = ids[0], ids[1], ids[2]
    upgraded = amosync("--config", str(config), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == (
        f"schema amocrm upgraded from {RELEASE_REVISION} to {head_revision()}"
    )
    pushed = amosync("--config", str(config), "push")
    assert pushed.returncode == 0, pushed.stderr

    patches = {item["id"]: item for item in sent(emulator, "PATCH")}
    assert set(patches) == {edited, renamed}  # never the disputed contact
    assert fields(patches[edited]) == {"name": "Edited Name", "last_name": "Edited"}
    assert fields(patches[renamed]) == {"name": "Renamed"}
    posts = sent(emulator, "POST")
    assert sorted(item["name"] for item in posts) == ["New One", "New Two"]
    created = [c for c in emulator.account.contacts.values() if c.name.startswith("New ")]
    assert sorted(c.name for c in created) == ["New One", "New Two"]  # once each

    assert emulator.contact(disputed)["name"] == "theirs"  # type: ignore[index]
    assert emulator.contact(edited)["last_name"] == "Edited"  # type: ignore[index]
    assert db.sql("SELECT contact_id, field, winner, resolved_at FROM sync_conflicts") == [
        (disputed, "name", None, None)
    ]
    rows = dict(db.sql("SELECT id, sync_status FROM contacts WHERE id IN (:a, :b, :c)",
                       a=disputed, b=edited, c=renamed))  # fmt: skip
    assert rows == {disputed: "conflict", edited: "synced", renamed: "synced"}
    new_ids = db.sql("SELECT id FROM contacts WHERE name LIKE 'New %' ORDER BY name")
    assert sorted(i for (i,) in new_ids) == sorted(c.id for c in created)
    assert db.sql("SELECT DISTINCT contact_id FROM sync_changes") == [(disputed,)]
