"""amoCRM unreachable: the error names host:port and what happened, each retry is a warning as
it happens, the progress display says it is connecting and log lines print above it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.config import DatabaseConfig
from sync.emulator import Emulator, EmulatorSettings, FaultRule, serve

from .cli import amosync, amosync_on_a_terminal, screen_lines

RETRIES = 2


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorSettings(contacts=300, seed=5, rate_limit=None))
    with serve(emulator) as server:
        yield emulator, server.base_url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(db: DatabaseConfig, base_url: str, **more: str) -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": base_url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken-never-shown",
        "AMOSYNC_AMOCRM__MAX_RETRIES": str(RETRIES),
        "AMOSYNC_AMOCRM__TIMEOUT_S": "1",
        "AMOSYNC_LOGGING__FORMAT": "console",
        **more,
    }


def _check_failure(stderr: str, requests: int = 1) -> str:
    """The pull's failure: no traceback, every line at most 300 characters, one warning per
    retry of each of `requests` requests before the end; returns the last line (the CLI's
    one-line error)."""
    assert "Traceback" not in stderr
    assert "t0ken-never-shown" not in stderr
    lines = stderr.strip().splitlines()
    assert all(len(line) <= 300 for line in lines), max(lines, key=len)
    # the error is said once, by the last line: no error record before it repeats it
    assert not any("[error" in line for line in lines), stderr
    retried = [line for line in lines if "amo_request_retried" in line]
    assert len(retried) == requests * RETRIES, stderr
    assert all("[warning" in line for line in retried)
    return lines[-1]


def test_connection_refused_names_host_port(db_config: DatabaseConfig, tmp_path: Path) -> None:
    port = _closed_port()
    result = amosync("pull", env=_env(db_config, f"http://127.0.0.1:{port}"), cwd=tmp_path)
    assert result.returncode == 1
    last = _check_failure(result.stderr)
    expected = (
        f"amosync: cannot connect to amoCRM at 127.0.0.1:{port}: connection refused (GET /api/v4/"
    )
    assert last.startswith(expected)
    assert last.endswith(" no answer)")


def test_an_unknown_host_says_the_name_is_not_resolved(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    result = amosync("pull", env=_env(db_config, "https://amocrm.invalid"), cwd=tmp_path)
    assert result.returncode == 1
    last = _check_failure(result.stderr)
    expected = "amosync: cannot connect to amoCRM at amocrm.invalid:443: name not resolved"
    assert last.startswith(expected)


def test_tls_to_a_plain_http_server_says_tls(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    tls_url = emulator[1].replace("http://", "https://")
    host = tls_url.removeprefix("https://")
    result = amosync("pull", env=_env(db_config, tls_url), cwd=tmp_path)
    assert result.returncode == 1
    last = _check_failure(result.stderr)
    assert last.startswith(f"amosync: cannot connect to amoCRM at {host}: TLS handshake failed")


def test_a_server_that_never_answers_says_timeout(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    fake, base_url = emulator
    fake.reset()
    fake.add_fault(FaultRule(kind="slow", delay_ms=3000, times=None))
    try:
        env = _env(db_config, base_url, AMOSYNC_AMOCRM__MAX_RPS="50")
        env["AMOSYNC_AMOCRM__ACCESS_TOKEN"] = fake.long_lived_token
        result = amosync("pull", env=env, cwd=tmp_path)
    finally:
        fake.reset()
    assert result.returncode == 1
    # the connection was up (the first request's headers were written), so the rest of the
    # preamble went out before any answer: the window, the newest page, the events marker and
    # the account read each timed out and were retried
    last = _check_failure(result.stderr, requests=4)
    host = base_url.removeprefix("http://")
    expected = f"amosync: amoCRM at {host} gave no answer: no answer in time (read timeout)"
    assert last.startswith(expected)


def test_the_preamble_leaves_once_the_connection_is_up_not_after_the_first_answer(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    fake, base_url = emulator
    fake.reset()
    # the first request gets no answer in time; its retry does
    fake.add_fault(FaultRule(kind="slow", delay_ms=3000, path="/api/v4/contacts", times=1))
    env = _env(db_config, base_url, AMOSYNC_AMOCRM__MAX_RPS="50")
    env["AMOSYNC_AMOCRM__ACCESS_TOKEN"] = fake.long_lived_token
    try:
        result = amosync("pull", "--full", env=env, cwd=tmp_path)
        seen = [(r["path"], r["query"]) for r in fake.requests()]
    finally:
        fake.reset()
    assert result.returncode == 0, result.stderr
    first = seen[0]
    retry = seen.index(first, 1)  # the first request again, after its timeout
    preamble = {path for path, _ in seen[1:retry]}
    assert {"/api/v4/events", "/api/v4/account"} <= preamble, seen[: retry + 1]


def test_an_ip_blocked_from_the_first_request_on_is_one_line_and_nothing_more_is_sent(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    fake, base_url = emulator
    fake.reset()
    fake.add_fault(FaultRule(kind="error", status=403, body="html", times=None))
    env = _env(db_config, base_url, AMOSYNC_AMOCRM__MAX_RPS="50")
    env["AMOSYNC_AMOCRM__ACCESS_TOKEN"] = fake.long_lived_token
    try:
        result = amosync("pull", "--full", env=env, cwd=tmp_path)
        seen = fake.requests()
    finally:
        fake.reset()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "amosync: amoCRM blocked this IP (403 page)" in lines[-1]
    assert len([line for line in lines if "amo_ip_blocked" in line]) == 1, lines
    assert not any("amo_request_retried" in line for line in lines)
    # the first request, and the preamble that left before its 403 was read: no more
    assert 1 <= len(seen) <= 5, [r["path"] for r in seen]


def test_the_ip_block_on_a_chat_lookup_of_a_whole_page_is_one_bounded_line(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    fake, base_url = emulator
    fake.reset()
    fake.add_fault(
        FaultRule(kind="error", status=403, body="html", path="/api/v4/contacts/chats", times=None)
    )
    env = _env(db_config, base_url, AMOSYNC_AMOCRM__MAX_RPS="50", AMOSYNC_LOGGING__FORMAT="json")
    env["AMOSYNC_AMOCRM__ACCESS_TOKEN"] = fake.long_lived_token
    try:
        result = amosync("pull", env=env, cwd=tmp_path)
        debug = amosync("pull", env={**env, "AMOSYNC_LOGGING__LEVEL": "debug"}, cwd=tmp_path)
    finally:
        fake.reset()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    last = lines[-1]
    assert len(last) <= 300
    assert "amosync: amoCRM blocked this IP (403 page)" in last
    assert "(GET /api/v4/contacts/chats?contact_id[]=" in last
    assert re.search(r"…\(\+\d+ more parameters\) -> 403\)$", last)
    for line in lines[:-1]:  # JSON records: every value bounded
        record = json.loads(line)
        assert all(len(v) <= 300 for v in record.values() if isinstance(v, str)), line
    # at debug level the whole URL is logged (a page's contact ids), once per failed request
    failed = [
        json.loads(line) for line in debug.stderr.splitlines() if "amo_request_failed" in line
    ]
    assert failed
    url = failed[0]["url"]
    assert len(url) > 300
    assert "…" not in url
    assert url.count("contact_id[]=") >= 40


def test_on_a_terminal_the_bar_says_connecting_and_log_lines_print_above_it(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    port = _closed_port()
    env = _env(db_config, f"http://127.0.0.1:{port}")
    del env["AMOSYNC_LOGGING__FORMAT"]  # auto: the console renderer on a terminal
    code, received = amosync_on_a_terminal("pull", env=env, cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in received
    shown = screen_lines(received)
    assert any(f"connecting to amoCRM at 127.0.0.1:{port}" in line for line in shown), shown
    retried = [line for line in shown if "amo_request_retried" in line]
    assert len(retried) == RETRIES, shown
    for line in retried:  # each on its own line, never after the bar's text
        assert re.match(r"\d{4}-\d\d-\d\dT\S+Z \[warning\s*\] amo_request_retried", line), line
    assert shown[-2].startswith(f"amosync: cannot connect to amoCRM at 127.0.0.1:{port}")


def test_the_emulator_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = amosync("emulator", "--port", str(port), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"amosync: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port"
    ]


def test_a_refused_token_is_said_once_by_the_last_line(
    db_config: DatabaseConfig, tmp_path: Path, emulator: tuple[Emulator, str]
) -> None:
    """The run's summary (`push_failed`, its counts) stays in the JSON log, but not as an error
    record repeating the line that follows it (the pull's: `_check_failure`)."""
    engine = sa.create_engine(db_config.url.reveal())
    with engine.begin() as conn:  # something to send, so the push reaches amoCRM
        conn.execute(sa.text("INSERT INTO amocrm.contacts (name) VALUES ('Ann')"))
    engine.dispose()
    env = _env(db_config, emulator[1], AMOSYNC_LOGGING__FORMAT="json")
    result = amosync("push", env=env, cwd=tmp_path)
    assert result.returncode == 1
    *records, last = result.stderr.strip().splitlines()
    assert last.startswith("amosync: amoCRM refused the access token (401)"), result.stderr
    error = last.removeprefix("amosync: ")
    events = [json.loads(line) for line in records]
    assert [e for e in events if e["level"] == "error"] == []
    assert not any(error in json.dumps(e, ensure_ascii=False) for e in events), records
    summary = [e for e in events if e["event"] == "push_failed"]
    assert len(summary) == 1, records
    assert "error" not in summary[0]
