"""The `amosync` command as a user runs it: exit codes, one-line errors, idempotent upgrade."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sync.config import DatabaseConfig
from sync.db.engine import create_engine
from sync.db.migrate import head_revision

from .cli import amosync

HEAD = head_revision()  # the newest migration; tests follow it as revisions are added


def test_bad_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[amocrm]\nbase_url = "http://crm.example.com"\naccess_token = "s3cr3t-token"\n'
        "page_size = 0\n[sync]\nconflict_policy = 'mine'\n",
        encoding="utf-8",
    )
    result = amosync("--config", str(config), "db", "upgrade", env={"AMOSYNC_LOGGING__LEVEL": "x"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for key in ("amocrm.base_url", "amocrm.page_size", "sync.conflict_policy", "logging.level"):
        assert key in result.stderr
    assert "environment AMOSYNC_LOGGING__LEVEL" in result.stderr
    assert "s3cr3t-token" not in result.stderr + result.stdout


def test_db_upgrade_twice_is_a_no_op(blank_db_config: DatabaseConfig, tmp_path: Path) -> None:
    env = {"AMOSYNC_DATABASE__URL": blank_db_config.url.reveal()}
    first = amosync("db", "upgrade", env=env, cwd=tmp_path)
    second = amosync("db", "upgrade", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema amocrm upgraded from empty to {HEAD}"
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"schema amocrm is up to date at revision {HEAD}"
    down = amosync("db", "downgrade", "base", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    engine = create_engine(blank_db_config)
    with engine.connect() as conn:
        tables = conn.scalars(sa.text("SELECT tablename FROM pg_tables WHERE schemaname='amocrm'"))
        assert list(tables) == ["alembic_version"]
    engine.dispose()


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    url = "postgresql://amosync:hunter2@127.0.0.1:1/crm"
    result = amosync("db", "upgrade", env={"AMOSYNC_DATABASE__URL": url}, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("amosync: PostgreSQL at postgresql+psycopg://***@127.0.0.1:1/crm")


def test_unknown_downgrade_target_is_a_usage_error(blank_db_config: DatabaseConfig) -> None:
    env = {"AMOSYNC_DATABASE__URL": blank_db_config.url.reveal()}
    result = amosync("db", "downgrade", "nonexistent", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot migrate to 'nonexistent'" in result.stderr


def test_embedded_database_is_the_default(tmp_path: Path) -> None:
    result = amosync("db", "upgrade", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert f"upgraded from empty to {HEAD}" in result.stdout
    assert (tmp_path / ".amosync" / "pgdata" / "PG_VERSION").exists()
    again = amosync("db", "upgrade", cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


def test_python_dash_m_is_the_same_command() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sync", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "Two-way sync between amoCRM contacts and PostgreSQL" in result.stdout


def test_db_shell_runs_sql_in_the_schema(db_config: DatabaseConfig) -> None:
    env = {"AMOSYNC_DATABASE__URL": db_config.url.reveal()}
    inserted = amosync(
        "db", "shell", "-Atc", "INSERT INTO contacts (name) VALUES ('Ann') RETURNING id", env=env
    )
    assert inserted.returncode == 0, inserted.stderr
    assert inserted.stdout.splitlines()[0] == "-1"
    refused = amosync("db", "shell", "-Atc", "DELETE FROM contacts WHERE id > 0", env=env)
    assert refused.returncode == 0  # nothing matched: the guard only fires per row
    changes = amosync("db", "shell", "-Atc", "SELECT kind FROM sync_changes", env=env)
    assert changes.stdout.strip() == "create"


def test_demo_sets_up_the_embedded_database(tmp_path: Path) -> None:
    result = amosync("demo", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "Migrated embedded PostgreSQL in .amosync" in result.stdout
    assert "RuntimeDirWarning" not in result.stderr


@pytest.mark.parametrize(
    "command", [("push",), ("sync",), ("pull",), ("status",), ("conflicts", "list"), ("resync",)]
)
def test_every_command_on_a_database_that_is_gone_says_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = {
        "AMOSYNC_DATABASE__URL": "postgresql://amosync:hunter2@127.0.0.1:1/crm",
        "AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:1",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
    }
    result = amosync(*command, env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("amosync: PostgreSQL")
    assert "hunter2" not in result.stderr
    assert "t0ken-never-shown" not in result.stderr


def test_a_pull_behind_an_exclusive_lock_fails_in_one_line_naming_the_holder(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    from sync.emulator import Emulator, EmulatorSettings, serve

    emulator = Emulator(EmulatorSettings(contacts=10, seed=3, rate_limit=None))
    url = make_url(db_config.url.reveal()).set(drivername="postgresql")
    with (
        serve(emulator) as server,
        psycopg.connect(
            url.render_as_string(hide_password=False), application_name="psql"
        ) as analyst,
    ):
        env = {
            "AMOSYNC_DATABASE__URL": db_config.url.reveal(),
            "AMOSYNC_DATABASE__LOCK_TIMEOUT_S": "1",
            "AMOSYNC_AMOCRM__BASE_URL": server.base_url,
            "AMOSYNC_AMOCRM__ACCESS_TOKEN": emulator.long_lived_token,
            "AMOSYNC_AMOCRM__MAX_RPS": "50",
        }
        analyst.execute("LOCK TABLE amocrm.contacts IN ACCESS EXCLUSIVE MODE")
        pid = analyst.info.backend_pid
        blocked = amosync("pull", env=env, cwd=tmp_path)
        analyst.rollback()
        after = amosync("pull", env=env, cwd=tmp_path)
    assert blocked.returncode == 1
    assert "Traceback" not in blocked.stderr
    last = blocked.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"amosync: waiting for a lock on amocrm.contacts held by pid {pid} "
        "(psql, idle in transaction for "
    )
    assert after.returncode == 0, after.stderr


@pytest.mark.parametrize(
    "args",
    [["status"], ["db", "upgrade"], ["pull", "--full"], ["webhooks", "status"],
     ["conflicts", "list"], ["run"]],
)  # fmt: skip
def test_config_after_the_command_is_read(tmp_path: Path, args: list[str]) -> None:
    """The usage is `amosync [--config PATH] COMMAND`; a user also writes it after the command.
    The file is the one read: its bad key is what the exit 2 names."""
    config = tmp_path / "late.toml"
    config.write_text("[amocrm]\npage_size = 0\n", encoding="utf-8")
    for late in (["--config", str(config)], [f"--config={config}"]):
        result = amosync(*args, *late, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "amocrm.page_size" in result.stderr
        assert "No such option" not in result.stderr


def test_status_with_config_after_the_command_runs(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    config = tmp_path / "amosync-late.toml"
    database = f'url = "{db_config.url.reveal()}"\nschema = "{db_config.schema}"\n'
    config.write_text(f"[database]\n{database}", encoding="utf-8")
    result = amosync("status", "--json", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith("{")
