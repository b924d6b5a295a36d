"""A PostgreSQL that accepts the TCP connection but never answers (a hung server, a frozen
proxy): every one-shot command gives up after the connect timeout with one line, exit 1,
instead of waiting with nothing said (psycopg's own fallback is 130 s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_proxy import FreezeProxy

from .cli import amosync

PASSWORD = "hunter2-silent"
# well above the product's bound (sync.db.engine.CONNECT_TIMEOUT_S) and below psycopg's 130 s
# fallback: a command still waiting then never gave up by itself
HANG_GUARD_S = 90


@pytest.fixture
def silent_port() -> Iterator[int]:
    proxy = FreezeProxy(("127.0.0.1", 5432))
    proxy.freeze()  # connections are accepted, their startup packet never answered
    try:
        yield proxy.port
    finally:
        proxy.close()


@pytest.mark.parametrize(
    "command", [("status",), ("status", "--json"), ("pull",), ("resync",)], ids=" ".join
)
def test_a_silent_database_fails_the_command_in_one_line(
    silent_port: int, tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = {
        "AMOSYNC_DATABASE__URL": f"postgresql://amosync:{PASSWORD}@127.0.0.1:{silent_port}/crm",
        "AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:1",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
    }
    result = amosync(*command, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("amosync: PostgreSQL at postgresql+psycopg://***@127.0.0.1:")
    assert "timeout" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout


@pytest.fixture
def answerless_port() -> Iterator[int]:
    proxy = FreezeProxy(("127.0.0.1", 5432))
    proxy.hold_queries()  # the session starts and authenticates; its first query gets no answer
    try:
        yield proxy.port
    finally:
        proxy.close()


@pytest.mark.parametrize("command", [("status",), ("status", "--json")], ids=" ".join)
def test_a_database_that_never_answers_a_query_fails_status_in_one_line(
    answerless_port: int, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Connected and authenticated, then silence: no libpq timeout applies, nor the server's
    statement_timeout (the server is the one that says nothing); status gives up by itself
    (sync.db.answer: lock_timeout_s + 10 s, here 1 + 10 < the connect timeout's 10 + 10)."""
    env = {
        "AMOSYNC_DATABASE__URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{answerless_port}"
        "/postgres?sslmode=disable",
        "AMOSYNC_DATABASE__LOCK_TIMEOUT_S": "1",
    }
    result = amosync(*command, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"amosync: PostgreSQL at postgresql+psycopg://***@127.0.0.1:{answerless_port}/postgres"
        "?sslmode=disable did not answer within 20 s (a hung server, or a network path that "
        "holds its packets)"
    )
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [("pull",), ("push",), ("resync",)], ids=" ".join)
def test_a_database_that_never_answers_a_query_fails_a_run_in_one_line(
    answerless_port: int, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """The same silence for the commands that run long: no whole-command bound fits them (a
    full resync runs for minutes), so each wait for PostgreSQL is bounded at the server's own
    statement_timeout + 10 s (sync.db.silence), here 2 + 10 s."""
    env = {
        "AMOSYNC_DATABASE__URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{answerless_port}"
        "/postgres?sslmode=disable",
        "AMOSYNC_DATABASE__STATEMENT_TIMEOUT_S": "2",
        "AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:1",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
    }
    result = amosync(*command, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"amosync: PostgreSQL at postgresql+psycopg://***@127.0.0.1:{answerless_port}/postgres"
        "?sslmode=disable failed: no answer for 12 s (a hung server, or a network path that "
        "holds its packets): connection closed"
    )
    assert PASSWORD not in result.stderr + result.stdout


def test_a_database_that_never_answers_fails_db_upgrade_in_one_line(
    answerless_port: int, tmp_path: Path
) -> None:
    """A migration runs with no statement_timeout (one on a big table takes as long as it
    takes), so its waits are not cut at statement_timeout_s + 10 s but checked then: a second
    connection asks the server whether the statement still runs; here that one gets no answer
    either (sync.db.silence), and `db upgrade` fails with one line instead of waiting for good."""
    env = {
        "AMOSYNC_DATABASE__URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{answerless_port}"
        "/postgres?sslmode=disable",
        "AMOSYNC_DATABASE__STATEMENT_TIMEOUT_S": "2",
    }
    result = amosync("db", "upgrade", env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    prefix = (
        f"amosync: PostgreSQL at postgresql+psycopg://***@127.0.0.1:{answerless_port}/postgres"
        "?sslmode=disable failed: no answer for "
    )
    assert lines[0].startswith(prefix), lines[0]
    assert lines[0].endswith(
        " s, nor to a second connection (a hung server, or a network path that holds its "
        "packets): connection closed"
    ), lines[0]
    assert PASSWORD not in result.stderr + result.stdout
