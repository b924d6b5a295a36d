"""Two `amosync` processes of one account share one rate budget: a `push` run while a
`pull --full` is under way (the operator's CLI beside the daemon) never puts more than 7
requests in any second on amoCRM, and gets no 429."""

from __future__ import annotations

import subprocess

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import busiest_window
from tests.e2e.cli import AMOSYNC, amosync, clean_env
from tests.integration.pull_helpers import emulated

EDIT_400 = sa.text(
    "UPDATE amocrm.contacts SET name = 'budget ' || id WHERE id IN "
    "(SELECT id FROM amocrm.contacts WHERE NOT is_deleted ORDER BY id LIMIT 400)"
)


def _env(db: DatabaseConfig, url: str, token: str) -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": token,
        "AMOSYNC_AMOCRM__MAX_RPS": "7",
        "AMOSYNC_SYNC__PULL_WORKERS": "4",
        "AMOSYNC_LOGGING__LEVEL": "warning",
    }


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AMOSYNC, *args], env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_push_beside_a_full_resync_keeps_the_account_within_7_rps(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    settings = {"contacts": 2500, "rate_limit": 7, "block_after_violations": None,
                "latency_ms": 300}  # fmt: skip
    with emulated(**settings) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        first = amosync("pull", "--full", env=env, timeout=300)
        assert first.returncode == 0, first.stderr
        with engine.begin() as conn:
            conn.execute(EDIT_400)
        emulator.clear_requests()
        resync, push = _start(env, "pull", "--full"), _start(env, "push")
        outputs = [proc.communicate(timeout=300) for proc in (resync, push)]
        log = [r for r in emulator.requests() if r["path"].startswith("/api/v4")]
    assert [resync.returncode, push.returncode] == [0, 0], outputs
    assert {r["method"] for r in log} >= {"GET", "PATCH"}  # both really ran against amoCRM
    assert [r["status"] for r in log].count(429) == 0
    assert busiest_window(log) <= 7
