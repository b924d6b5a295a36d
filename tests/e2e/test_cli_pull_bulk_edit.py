"""The audit's case through the CLI: an amoCRM automation bulk-creates 600 contacts (one second
T) and edits them all a moment later, while `amosync pull` reads T by id. The second is empty
by then (204 for good): `amosync pull` exits 0 with every contact in its edited version, and its
`sync_runs` row says succeeded (it exited 1 with "amoCRM keeps answering 204 for the contacts
of T"). The edit is timed by the emulator's `edit` fault on the first read by id."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.e2e.cli import amosync
from tests.e2e.test_cli_pull_standins import _env
from tests.integration.pull_helpers import assert_converged, emulated


def test_pull_exits_0_when_a_bulk_edit_empties_the_bulk_created_second_it_reads(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300, trashed_fraction=0.0) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        assert amosync("pull", env=env).returncode == 0  # the first: a full resync
        emulator.clock.freeze()
        created = emulator.create_contacts([{"name": f"Lead {n}"} for n in range(600)])
        emulator.clock.unfreeze()
        emulator.clock.advance(1.5)
        emulator.add_fault(
            FaultRule(kind="edit", path="/api/v4/contacts", order="id", touch=10_000)
        )
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert [f["fired"] for f in emulator.faults()] == [1]
        with engine.connect() as conn:
            status = conn.scalar(sa.text("SELECT status FROM amocrm.sync_runs ORDER BY id DESC"))
            sql = sa.text("SELECT id, name FROM amocrm.contacts WHERE id = ANY(:ids)")
            names = dict(conn.execute(sql, {"ids": created}).all())
        assert status == "succeeded"
        assert len(names) == 600
        assert all("✎" in name for name in names.values())  # the edited versions
        emulator.clear_faults()
        assert_converged(engine, emulator)
