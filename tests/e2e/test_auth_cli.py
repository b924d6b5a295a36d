"""`amosync auth --code CODE` as a user runs it: a subprocess, the emulator, real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import Engine

from sync.amo.auth import SEED_KEY
from sync.config import DatabaseConfig
from sync.db.engine import create_engine
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


def amosync(
    config: Path, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMOSYNC_")}
    env.update(extra or {})
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


def test_a_new_configured_refresh_token_replaces_a_revoked_stored_pair(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    token_path = "/oauth2/access_token"
    with running(auth_mode="oauth") as (emulator, url):
        config = write_config(tmp_path / "amosync.toml", emulator, url, db_config)
        first = emulator.issue_tokens()["refresh_token"]
        seeded = amosync(config, "pull", extra={"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": first})
        assert seeded.returncode == 0, seeded.stderr

        emulator.revoke_all_tokens()  # the integration was revoked in amoCRM
        refused = amosync(config, "pull", extra={"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": first})
        assert refused.returncode == 1
        line = refused.stderr.strip().splitlines()[-1]
        assert "token endpoint refused the refresh token" in line
        assert "Token has been revoked" in line
        assert "access token" not in line

        # the next command knows amoCRM refused that token (a record in the stored value, not
        # the token): it says so, since when, and sends nothing
        emulator.clear_requests()
        again_refused = amosync(
            config, "pull", extra={"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": first}
        )
        assert again_refused.returncode == 1
        line = again_refused.stderr.strip().splitlines()[-1]
        assert line.startswith("amosync: amoCRM refused this refresh token at "), line
        assert "Token has been revoked), and it is not sent again; configure a new" in line
        assert [r for r in emulator.requests() if r["path"] == token_path] == []
        assert first not in again_refused.stdout + again_refused.stderr

        fresh = emulator.issue_tokens()["refresh_token"]  # the operator's new token
        emulator.clear_requests()
        env = {"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": fresh}
        recovered = amosync(config, "pull", extra=env)
        assert recovered.returncode == 0, recovered.stderr
        assert fresh not in recovered.stdout + recovered.stderr
        assert "amo_refresh_token_replaced" in recovered.stderr
        calls = [r["status"] for r in emulator.requests() if r["path"] == token_path]
        assert calls == [200]  # the new token, exchanged once
        value = TokenStore(engine).load()
        assert value is not None
        assert fresh not in str(value)  # remembered as a hash only
        assert first not in str(value)
        assert len(value[SEED_KEY]) == 2  # both configured tokens, as hashes

        emulator.clear_requests()
        again = amosync(config, "pull", extra=env)  # the same configured token: stored pair wins
        assert again.returncode == 0, again.stderr
        assert [r for r in emulator.requests() if r["path"] == token_path] == []
        assert TokenStore(engine).load() == value

        # a process still configured with the old token (a daemon not restarted yet) takes the
        # stored pair instead of its spent token
        stale = amosync(config, "pull", extra={"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": first})
        assert stale.returncode == 0, stale.stderr
        assert [r for r in emulator.requests() if r["path"] == token_path] == []


def test_auth_code_on_a_fresh_database_migrates_it_first(
    tmp_path: Path, blank_db_config: DatabaseConfig
) -> None:
    with running(auth_mode="oauth") as (emulator, url):
        config = write_config(tmp_path / "amosync.toml", emulator, url, blank_db_config)
        done = amosync(config, "auth", "--code", emulator.issue_auth_code())
        assert done.returncode == 0, done.stderr
        assert "OAuth tokens stored" in done.stdout
        assert '"event": "database_migrated"' in done.stderr
        engine = create_engine(blank_db_config)
        try:
            value = TokenStore(engine).load()
        finally:
            engine.dispose()
        assert value is not None
        assert emulator.tokens.accepts(f"Bearer {value['access_token']}")
