"""`amosync demo` as a user runs it: the real command, every step, and what it left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from sync.config import DatabaseConfig
from sync.demo import DEMO_SCHEMA
from tests.e2e.cli import AMOSYNC, amosync, clean_env


def _env(db: DatabaseConfig) -> dict[str, str]:
    return {"AMOSYNC_DATABASE__URL": db.url.reveal()}


def test_demo_runs_every_step_on_the_configured_database(db_config: DatabaseConfig) -> None:
    result = amosync("demo", env=_env(db_config), timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("1. Migrated the configured database", "2. Full pull", "3. UPDATE contacts",
                 "4. A CRM user renamed", "5. Both sides renamed", "6. amosync conflicts resolve",
                 "Try next:"):  # fmt: skip
        assert step in out, out
    assert "amoCRM now has name 'Renamed in PostgreSQL'" in out
    assert "the row now says 'Renamed in amoCRM' (synced)" in out
    assert "push found 1 conflict;" in out
    assert (
        "2. Full pull: 118 of 120 contacts read (2 in the trash: the API does not list them)" in out
    )
    assert "now has name 'Ann (edited in SQL)'" in out
    hooked = re.search(
        r"7\. amosync run with webhooks on, subscribed by `amosync webhooks register` \(created; "
        r"polls 60 minutes apart\): a CRM user renamed contact (\d+); amoCRM posted 1 hook, the "
        r"daemon pulled, and \d+\.\d\d s after the edit the row said 'Renamed in amoCRM, "
        r"announced by a hook'\.",
        out,
    )
    assert hooked, out

    engine = sa.create_engine(
        db_config.url.reveal().replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        with engine.connect() as conn:
            names = conn.scalars(sa.text(
                f"SELECT name FROM {DEMO_SCHEMA}.contacts WHERE name LIKE 'Renamed in %' "
                "OR name LIKE 'Ann (%' ORDER BY name"
            )).all()  # fmt: skip
            conflicts = conn.execute(
                sa.text(f"SELECT winner, resolved_at IS NOT NULL FROM {DEMO_SCHEMA}.sync_conflicts")
            ).all()
            untouched = conn.scalar(sa.text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'amocrm' "
                "AND table_name = 'contacts'"
            ))  # fmt: skip
    finally:
        engine.dispose()
    assert names == ["Ann (edited in SQL)", "Renamed in PostgreSQL",
                     "Renamed in amoCRM, announced by a hook"]  # fmt: skip
    assert conflicts == [("local", True)]
    assert untouched == 1  # the configured schema is still there, not used by the demo


def test_demo_can_run_again(db_config: DatabaseConfig) -> None:
    first = amosync("demo", env=_env(db_config), timeout=120)
    second = amosync("demo", env=_env(db_config), timeout=120)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "push found 1 conflict;" in second.stdout


def test_the_lines_to_try_next_run_as_printed_after_make_demo(db_config: DatabaseConfig) -> None:
    # `make demo` runs `.venv/bin/amosync demo` from the checkout, which is not on the PATH
    venv_bin = Path(sys.executable).parent
    checkout = venv_bin.parent.parent
    script = str(Path(AMOSYNC).relative_to(checkout))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != venv_bin)
    env = clean_env({**_env(db_config), "PATH": path})
    demo = subprocess.run([script, "demo"], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    tries = demo.stdout.split("Try next:\n", 1)[1].splitlines()
    assert tries
    assert all(f"{script} " in line for line in tries), tries
    for line in tries:
        if " emulator " in line:  # a server that runs until stopped
            continue
        ran = subprocess.run(["sh", "-c", line.strip()], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert ran.returncode == 0, (line, ran.stderr)
