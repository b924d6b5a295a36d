"""`database.schema` must not be a system schema: refused by the config check, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.cli import main


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ("information_schema", "pg_dump skips it"),
        ("pg_catalog", "PostgreSQL reserves pg_ schema names"),
        ("pg_toast", "PostgreSQL reserves pg_ schema names"),
        ("pg_amocrm", "PostgreSQL reserves pg_ schema names"),
    ],
)
def test_a_system_schema_is_refused_with_exit_2(
    schema: str,
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`db upgrade` put the tables in information_schema, which backups leave out; pg_* failed
    later with PostgreSQL's own error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMOSYNC_DATABASE__SCHEMA", schema)
    # without the check, `db upgrade` reaches for this (closed) port and fails with exit 1
    monkeypatch.setenv("AMOSYNC_DATABASE__URL", "postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(SystemExit) as caught:
        main(["db", "upgrade"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "database.schema" in err
    assert says in err
    assert "Traceback" not in err


def test_a_schema_merely_containing_pg_is_fine() -> None:
    from sync.config_checks import schema_name

    assert schema_name("amocrm_pg") is None
    assert schema_name("information") is None
