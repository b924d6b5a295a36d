"""Every command run before `amosync db upgrade` says so: one line, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.config import DatabaseConfig
from sync.db.engine import create_engine
from sync.db.migrate import head_revision, upgrade

from .cli import amosync

HEAD = head_revision()  # the newest migration; tests follow it as revisions are added

COMMANDS = [
    ("push",),
    ("sync",),
    ("pull",),
    ("resync",),
    ("resync", "--wait", "5"),
    ("status",),
    ("status", "--json"),
    ("conflicts", "list"),
    ("conflicts", "resolve", "1", "--keep", "local"),
    ("db", "grant-reader"),
]


def _env(db: DatabaseConfig) -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:1",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
    }


def _one_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "t0ken-never-shown" not in stderr
    return str(lines[0])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_before_db_upgrade_says_to_run_it(
    blank_db_config: DatabaseConfig, tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = amosync(*command, env=_env(blank_db_config), cwd=tmp_path)
    line = _one_line(result)
    database = blank_db_config.url.reveal().rsplit("/", 1)[1]
    assert line == (
        f"amosync: schema amocrm in database {database} on 127.0.0.1:5432 has no sync tables "
        "yet: run `amosync db upgrade` first"
    )
    assert result.stdout == ""


def test_a_schema_an_upgrade_behind_says_which_revision_it_needs(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    upgrade(blank_db_config, "0003")
    line = _one_line(amosync("pull", env=_env(blank_db_config), cwd=tmp_path))
    assert f"is at revision 0003, this amosync needs {HEAD}: run `amosync db upgrade` first" in line


def test_a_missing_table_past_the_check_still_names_db_upgrade(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    engine = create_engine(db_config)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE amocrm.sync_conflicts"))
    engine.dispose()
    line = _one_line(amosync("conflicts", "list", env=_env(db_config), cwd=tmp_path))
    assert line.endswith(
        'relation "amocrm.sync_conflicts" does not exist: the schema is not migrated: run '
        "`amosync db upgrade` first"
    )
