"""Nothing secret or personal in errors (issue 11 item 8): no SQL, parameters or DETAIL values in
`sync_runs.error` or the logs, the reader role cannot read run errors, psql gets no password."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig, Secret
from sync.db.roles import grant_reader
from sync.db.shell import run_shell
from sync.emulator import Emulator
from sync.errors import StoreError
from tests.integration.pull_helpers import emulated, make_config, pull

LEAKS = ("[SQL:", "[parameters:", "DETAIL", "@")


def test_a_refused_pull_write_leaves_no_sql_or_contact_data_behind(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with engine.begin() as conn:  # any page with an e-mail now violates a constraint
        conn.execute(sa.text(
            "ALTER TABLE amocrm.contact_custom_field_values "
            "ADD CONSTRAINT no_mail CHECK (value NOT LIKE '%@%')"
        ))  # fmt: skip
    with emulated(contacts=20) as (emulator, url):
        emails = _emails(emulator)
        config = make_config(db_config, url, emulator.long_lived_token)
        with capture_logs() as logs, pytest.raises(StoreError) as caught:
            pull(config, engine, emulator)
    with engine.connect() as conn:
        stored = conn.scalar(sa.text("SELECT error FROM amocrm.sync_runs ORDER BY id DESC"))
    assert stored is not None
    assert "violates check constraint" in stored
    for text in (str(caught.value), stored, repr(logs)):
        assert not [leak for leak in LEAKS if leak in text], text
        assert not [email for email in emails if email in text]


def _emails(emulator: Emulator) -> list[str]:
    found = []
    for contact_id in list(emulator.account.contacts):
        data = emulator.contact(contact_id) or {}
        for field in data.get("custom_fields_values") or []:
            found += [str(v["value"]) for v in field["values"] if "@" in str(v.get("value"))]
    assert found
    return found


def test_the_reader_sees_run_history_but_not_its_errors(engine: Engine, reader_role: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {reader_role}"))
        conn.execute(sa.text(f"GRANT SELECT ON amocrm.sync_runs TO {reader_role}"))  # an old grant
        grant_reader(conn, "amocrm", reader_role)
        conn.execute(sa.text("INSERT INTO amocrm.sync_runs (kind, error) VALUES ('pull', 'x')"))
    for table in ("sync_runs", "sync_requests"):
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET ROLE {reader_role}"))
            assert conn.scalar(sa.text(f"SELECT count(id) FROM amocrm.{table}")) >= 0
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(f"SELECT error FROM amocrm.{table}"))


FAKE_PSQL = """#!/bin/sh
{ printf '%s\\n' "$@"; echo "PGPASSWORD=$PGPASSWORD"; echo "PGOPTIONS=$PGOPTIONS"; } > "$OUT"
"""


def fake_psql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `psql` first on PATH that writes its arguments and environment to the returned file."""
    psql = tmp_path / "psql"
    psql.write_text(FAKE_PSQL, encoding="utf-8")
    psql.chmod(psql.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "argv"
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OUT", str(out))
    return out


def test_db_shell_passes_the_password_in_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = fake_psql(tmp_path, monkeypatch)
    monkeypatch.setattr("sync.db.shell.import_embedded", lambda: None)
    url = "postgresql://amosync:hunter2@db.internal:5433/crm?sslmode=require&password=hunter2"
    assert run_shell(DatabaseConfig(url=Secret(url), schema="acme"), ("-c", "SELECT 1")) == 0
    argv, env = out.read_text(encoding="utf-8").split("PGPASSWORD=")
    assert argv.splitlines() == [
        "postgresql://amosync@db.internal:5433/crm?sslmode=require",
        "-c",
        "SELECT 1",
    ]
    assert env.splitlines() == ["hunter2", "PGOPTIONS=-c search_path=acme,public"]


def test_db_shell_keeps_the_operators_own_pgoptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = fake_psql(tmp_path, monkeypatch)
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=5s")
    monkeypatch.setattr("sync.db.shell.import_embedded", lambda: None)
    url = "postgresql://amosync@db.internal:5433/crm"
    assert run_shell(DatabaseConfig(url=Secret(url), schema="acme"), ()) == 0
    options = out.read_text(encoding="utf-8").splitlines()[-1]
    assert options == "PGOPTIONS=-c statement_timeout=5s -c search_path=acme,public"
