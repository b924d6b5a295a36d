"""`amosync run` with webhooks on, as an operator runs it: the real CLI, the emulator process,
PostgreSQL; a hook posted over HTTP brings a remote edit in although polls are an hour apart."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.schema import contacts
from tests.e2e.cli import amosync
from tests.e2e.daemon_procs import DaemonProcess, EmulatorProcess, env_for, wait_for

pytestmark = pytest.mark.slow
SECRET = "e2e-hook-secret-0123456789"


def _post(daemon: DaemonProcess, secret: str, body: bytes) -> int:
    url = f"http://127.0.0.1:{daemon.port}/webhooks/amocrm/{secret}"
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _name(engine: Engine, contact_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(contacts.c.name).where(contacts.c.id == contact_id))


def test_a_hook_brings_a_remote_edit_in_and_the_secret_stays_secret(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    emulator = EmulatorProcess(tmp_path)
    emulator.start()
    daemon = DaemonProcess(tmp_path, db_config, emulator.base_url,
                           AMOSYNC_SYNC__POLL_INTERVAL_S="3600",
                           AMOSYNC_SYNC__PUSH_INTERVAL_S="3600",
                           AMOSYNC_WEBHOOKS__ENABLED="true",
                           AMOSYNC_WEBHOOKS__POLL_INTERVAL_S="7200",
                           AMOSYNC_WEBHOOKS__SECRET=SECRET)  # fmt: skip
    # subscribed as an operator does it, so the leader's check of the subscription finds it; the
    # emulator's own deliveries are lost: this test posts its hook itself
    daemon.env["AMOSYNC_WEBHOOKS__PUBLIC_URL"] = f"http://127.0.0.1:{daemon.port}"
    emulator.admin("PATCH", "webhooks/controls", {"loss_rate": 1.0})
    registered = amosync("webhooks", "register", env=env_for(daemon))
    assert registered.returncode == 0, registered.stderr
    try:
        daemon.start()
        body = daemon.wait_health(200)
        assert body["webhooks"]["state"] == "quiet"
        with engine.connect() as conn:
            query = sa.select(contacts.c.id).where(~contacts.c.is_deleted).order_by(contacts.c.id)
            contact = int(conn.scalars(query.limit(1)).one())
        updated = emulator.admin("PATCH", f"contacts/{contact}", {"name": "Hooked edit"})
        entity = "contacts[update][0]"
        form = urlencode({f"{entity}[id]": contact, f"{entity}[type]": "contact",
                          f"{entity}[updated_at]": updated["updated_at"],
                          "account[id]": 1}).encode()  # fmt: skip
        assert _post(daemon, "wrong-" + SECRET, form) == 404
        assert _post(daemon, SECRET, form) == 200
        wait_for("the edit", lambda: _name(engine, contact) == "Hooked edit", timeout=20)
        health = daemon.wait_health(200)
        assert health["webhooks"]["state"] == "healthy"
        metrics = daemon.metrics()
        assert 'amosync_webhooks_received_total{via="http"} 1.0' in metrics
        assert 'amosync_webhooks_rejected_total{reason="secret"} 1.0' in metrics
        assert "amosync_webhook_pulls_total 1.0" in metrics
        wait_for(
            "the longer poll interval",  # set by the leader's loop, once a second
            lambda: "amosync_poll_interval_seconds 7200.0" in daemon.metrics(),
            timeout=5,
        )
        status = amosync("status", "--json", env=env_for(daemon))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["webhooks"]["state"] == "healthy"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert SECRET not in daemon.log.read_text(encoding="utf-8", errors="replace")
        assert SECRET not in status.stdout + status.stderr
    finally:
        daemon.kill()
        emulator.stop()
