"""What the push and daemon benchmarks share: a scratch database and an emulator process.

admin, url = scratch_database()      # on $AMOSYNC_TEST_DATABASE_URL or the local server
proc = emulator_process([...])       # `python -m sync emulator …`, returned once it listens
drop_database(admin, url)
"""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from sqlalchemy.engine import make_url

SERVER = os.environ.get(
    "AMOSYNC_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"
)


def scratch_database() -> tuple[sa.Engine, sa.URL]:
    """An AUTOCOMMIT engine on the server and the URL of a new, empty database on it."""
    server = make_url(SERVER)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"amosync_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return admin, server.set(database=name)


def drop_database(admin: sa.Engine, url: sa.URL) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def emulator_process(options: list[str]) -> subprocess.Popen[str]:
    """`amosync emulator OPTIONS` in its own process (its CPU is not the benchmark's), once it
    prints its admin address."""
    command = [sys.executable, "-m", "sync", "emulator", *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("admin="):
            return proc
    raise RuntimeError("the emulator did not start")
