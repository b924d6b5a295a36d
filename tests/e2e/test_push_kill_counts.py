"""A push killed with -9 leaves a `sync_runs` row whose counts are what it recorded (as a
pull's do): each batch's counts are added in the transaction that records its results, not
only at the run's end ("pushed 0" for a run that sent a hundred edits before)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.e2e.cli import amosync
from tests.e2e.test_push_cli import clean_env, command, write_config
from tests.integration.push_env import push_env

EDITS = 120
RECORDED = "SELECT count(*) FROM contacts WHERE name LIKE 'kill %' AND sync_status = 'synced'"


def test_a_push_killed_mid_run_leaves_the_counts_of_what_it_recorded(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=EDITS + 5, latency_ms=120) as env:
        env.mirror()
        for contact_id in sorted(env.emulator.account.contacts)[:EDITS]:
            env.sql("UPDATE contacts SET name = 'kill ' || id WHERE id = :id", id=contact_id)
        config = write_config(tmp_path / "amosync.toml", env, db_config)
        proc = subprocess.Popen(
            command(config, "push"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            deadline = time.monotonic() + 60
            while env.sql(RECORDED)[0][0] < 20:  # two batches of 10 recorded, 100 to go
                assert proc.poll() is None, f"push ended first: {proc.communicate()}"
                assert time.monotonic() < deadline, "push recorded nothing"
                time.sleep(0.01)
            proc.kill()
        finally:
            proc.communicate(timeout=10)
        recorded = env.sql(RECORDED)[0][0]
        assert 20 <= recorded < EDITS, "killed too late to tell"
        [row] = env.sql("SELECT status, pushed, errors, requests FROM sync_runs")
        assert (row.status, row.pushed, row.errors) == ("running", recorded, 0)
        assert row.requests >= 2  # one GET of the current versions, a PATCH per batch

        status = amosync("status", "--json", "--config", str(config))
        assert status.returncode == 0, status.stderr
        push = json.loads(status.stdout)["last_runs"]["push"]
        assert (push["status"], push["pushed"]) == ("interrupted", recorded)
