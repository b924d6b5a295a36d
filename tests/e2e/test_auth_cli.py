"""`amosync auth --code CODE` as a user runs it: a subprocess, the emulator, real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.tokens import TokenStore
from sync.emulator import Emulator
from tests.integration.amo_emulator import running


def write_config(path: Path, emulator: Emulator, url: str, db: DatabaseConfig) -> Path:
    s = emulator.settings
    path.write_text(
        f"""
[amocrm]
base_url = "{url}"
max_rps = 50

[amocrm.oauth]
client_id = "{s.client_id}"
client_secret = "{s.client_secret}"
redirect_uri = "{s.redirect_uri}"

[database]
url = "{db.url.reveal()}"
schema = "{db.schema}"
""",
        encoding="utf-8",
    )
    return path


def amosync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMOSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "sync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_auth_code_is_exchanged_and_stored(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        config = write_config(tmp_path / "amosync.toml", emulator, url, db_config)
        code = emulator.issue_auth_code()
        done = amosync(config, "auth", "--code", code)
        assert done.returncode == 0, done.stderr
        assert "OAuth tokens stored" in done.stdout
        value = TokenStore(engine).load()
        assert value is not None
        assert code not in done.stdout + done.stderr
        assert value["access_token"] not in done.stdout + done.stderr
        # the stored pair works for the API
        assert emulator.tokens.accepts(f"Bearer {value['access_token']}")

        again = amosync(config, "auth", "--code", code)  # a code works once
        assert again.returncode == 1
        lines = again.stderr.strip().splitlines()
        assert len(lines) == 1, again.stderr
        assert lines[0].count("-> 400") == 1
        assert "revoked" in lines[0]
        assert lines[0].startswith("amosync: ")
        assert "Traceback" not in again.stderr
        assert code not in again.stderr
        assert TokenStore(engine).load() == value  # the stored pair is untouched
