"""The schema check of every command: a fresh database is migrated by the first command, as
`amosync db upgrade` would; a schema at another revision makes the command say what to do in one
line, exit 1, no traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.config import DatabaseConfig
from sync.db.engine import create_engine
from sync.db.migrate import head_revision, upgrade
from tests.integration.amo_emulator import running

from .cli import AMOSYNC, amosync, clean_env

HEAD = head_revision()  # the newest migration; tests follow it as revisions are added

COMMANDS = [
    ("push",),
    ("sync",),
    ("pull",),
    ("resync",),
    ("status",),
    ("status", "--json"),
    ("conflicts", "list"),
    ("webhooks", "status"),
    ("db", "grant-reader"),
]


def _env(db: DatabaseConfig, base_url: str = "http://127.0.0.1:1") -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": base_url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
        "AMOSYNC_WEBHOOKS__PUBLIC_URL": "https://sync.example.com",
    }


def _one_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "t0ken-never-shown" not in stderr
    return str(lines[0])


def _revision(db: DatabaseConfig) -> str | None:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            if conn.scalar(sa.text("SELECT to_regclass('amocrm.alembic_version')")) is None:
                return None
            return str(conn.scalar(sa.text("SELECT version_num FROM amocrm.alembic_version")))
    finally:
        engine.dispose()


def _migrated_events(stderr: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in events if e["event"] == "database_migrated"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_first_command_on_a_fresh_database_migrates_it(
    blank_db_config: DatabaseConfig, tmp_path: Path, command: tuple[str, ...]
) -> None:
    with running(contacts=3, long_lived_token="t0ken-never-shown") as (_emulator, url):
        result = amosync(*command, env=_env(blank_db_config, url), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "db upgrade` first" not in result.stderr
    assert "t0ken-never-shown" not in result.stdout + result.stderr
    [migrated] = _migrated_events(result.stderr)  # one info line says so
    assert (migrated["level"], migrated["before"], migrated["after"]) == ("info", None, HEAD)
    assert _revision(blank_db_config) == HEAD


def test_a_pull_on_a_fresh_database_stores_contacts_and_migrates_only_once(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    with running(contacts=7, long_lived_token="t0ken-never-shown") as (_emulator, url):
        env = _env(blank_db_config, url)
        first = amosync("pull", env=env, cwd=tmp_path)
        second = amosync("pull", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(_migrated_events(first.stderr)) == 1
    assert second.returncode == 0, second.stderr
    assert _migrated_events(second.stderr) == []
    engine = create_engine(blank_db_config)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM amocrm.contacts")) == 7
    finally:
        engine.dispose()


def test_commands_started_together_on_a_fresh_database_migrate_it_once(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    env = clean_env(_env(blank_db_config))
    procs = [
        subprocess.Popen(
            [AMOSYNC, "status"],
            env=env,
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    answers = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], answers
    assert sum(len(_migrated_events(stderr)) for _out, stderr in answers) == 1
    assert _revision(blank_db_config) == HEAD


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


def test_a_schema_a_newer_amosync_migrated_says_to_upgrade_amosync(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    upgrade(blank_db_config)
    engine = create_engine(blank_db_config)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE amocrm.alembic_version SET version_num = '9999'"))
    engine.dispose()
    line = _one_line(amosync("pull", env=_env(blank_db_config), cwd=tmp_path))
    assert line.endswith("is at revision 9999, which this amosync does not know (a newer "
                         "amosync migrated it): upgrade amosync")  # fmt: skip


def test_tables_of_the_sync_without_a_revision_are_not_migrated_over(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    upgrade(blank_db_config)
    engine = create_engine(blank_db_config)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE amocrm.alembic_version"))
    engine.dispose()
    line = _one_line(amosync("status", env=_env(blank_db_config), cwd=tmp_path))
    assert "has tables of the sync but no migration revision" in line
    assert _revision(blank_db_config) is None
