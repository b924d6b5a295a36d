"""Issue 15's safety net end to end: the emulator posts its own hooks to the real `amosync run`,
subscribed by the real `amosync webhooks register` — delivered, all lost, and disabled by
amoCRM's rule for failing destinations."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.schema import contacts
from tests.e2e.cli import amosync
from tests.e2e.daemon_procs import DaemonProcess, EmulatorProcess, env_for, wait_for

pytestmark = pytest.mark.slow
SECRET = "e2e-delivered-hook-secret-42"


def _daemon(tmp: Path, db: DatabaseConfig, emulator: EmulatorProcess, **settings: str) -> Any:
    daemon = DaemonProcess(tmp, db, emulator.base_url, AMOSYNC_WEBHOOKS__ENABLED="true",
                           AMOSYNC_WEBHOOKS__SECRET=SECRET, **settings)  # fmt: skip
    daemon.env["AMOSYNC_WEBHOOKS__PUBLIC_URL"] = f"http://127.0.0.1:{daemon.port}"
    return daemon


def _register(daemon: DaemonProcess) -> str:
    result = amosync("webhooks", "register", env=env_for(daemon))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stdout


def _name(engine: Engine, contact_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(contacts.c.name).where(contacts.c.id == contact_id))


def _contacts(engine: Engine, n: int) -> list[int]:
    with engine.connect() as conn:
        query = sa.select(contacts.c.id).where(~contacts.c.is_deleted).order_by(contacts.c.id)
        return [int(i) for i in conn.scalars(query.limit(n))]


def _deliveries(emulator: EmulatorProcess, contact: int) -> list[str]:
    """Outcomes of the emulator's posts that carried `contact`."""
    posts = emulator.admin("GET", "webhooks/deliveries")
    return [p["outcome"] for p in posts if any(e["id"] == contact for e in p["entities"])]


def _webhooks_state(daemon: DaemonProcess) -> dict[str, Any] | None:
    got = daemon.health()
    return got[1].get("webhooks") if got else None


def _status_state(daemon: DaemonProcess) -> str:
    """The state `amosync status` shows: the leader stores each change within about a second."""
    status = amosync("status", "--json", env=env_for(daemon))
    assert status.returncode == 0, status.stderr
    assert SECRET not in status.stdout + status.stderr
    return str(json.loads(status.stdout)["webhooks"]["state"])


def test_a_remote_edit_arrives_through_a_hook_the_emulator_delivers(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    emulator = EmulatorProcess(tmp_path)
    emulator.start()
    daemon = _daemon(tmp_path, db_config, emulator, AMOSYNC_SYNC__POLL_INTERVAL_S="3600",
                     AMOSYNC_SYNC__PUSH_INTERVAL_S="3600",
                     AMOSYNC_WEBHOOKS__POLL_INTERVAL_S="7200")  # fmt: skip
    try:
        daemon.start()
        assert daemon.wait_health(200)["webhooks"]["state"] == "quiet"
        assert ": created" in _register(daemon)
        (contact,) = _contacts(engine, 1)
        emulator.admin("PATCH", f"contacts/{contact}", {"name": "Delivered by a hook"})
        # polls are an hour apart: only the hook the emulator posted can bring it this soon
        wait_for("the edit", lambda: _name(engine, contact) == "Delivered by a hook", timeout=20)
        assert "delivered" in _deliveries(emulator, contact)
        assert "amosync_webhook_pulls_total 1.0" in daemon.metrics()
        wait_for("healthy", lambda: (_webhooks_state(daemon) or {}).get("state") == "healthy", 5)
        wait_for("status healthy", lambda: _status_state(daemon) == "healthy", timeout=10)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert SECRET not in daemon.log.read_text(encoding="utf-8", errors="replace")
    finally:
        daemon.kill()
        emulator.stop()


def test_with_every_hook_lost_the_default_poll_still_brings_edits_and_says_degraded(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    # webhooks.poll_interval_s left at its default: healthy hooks must not lengthen the poll
    emulator = EmulatorProcess(tmp_path)
    emulator.start()
    daemon = _daemon(tmp_path, db_config, emulator, AMOSYNC_SYNC__POLL_INTERVAL_S="4",
                     AMOSYNC_WEBHOOKS__ANNOUNCE_GRACE_S="1")  # fmt: skip
    try:
        daemon.start()
        daemon.wait_health(200)
        _register(daemon)
        first, second = _contacts(engine, 2)
        emulator.admin("PATCH", f"contacts/{first}", {"name": "Hooked first"})
        wait_for("the hooked edit", lambda: _name(engine, first) == "Hooked first", timeout=20)
        wait_for("healthy", lambda: (_webhooks_state(daemon) or {}).get("state") == "healthy", 5)
        emulator.admin("PATCH", "webhooks/controls", {"loss_rate": 1.0})
        emulator.admin("PATCH", f"contacts/{second}", {"name": "Its hook was lost"})
        wait_for("the edit by a poll", lambda: _name(engine, second) == "Its hook was lost", 20)
        assert set(_deliveries(emulator, second)) == {"lost"}
        state = wait_for(
            "degraded",
            lambda: (s := _webhooks_state(daemon)) and s["state"] == "degraded" and s,
            timeout=20,
        )
        assert "no hook announced" in state["reason"]
        assert state["poll_interval_s"] == 4
        wait_for("status degraded", lambda: _status_state(daemon) == "degraded", timeout=10)
    finally:
        daemon.kill()
        emulator.stop()


def test_a_hook_amocrm_disabled_after_failed_deliveries_is_reported_degraded(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    emulator = EmulatorProcess(tmp_path)
    emulator.start()
    daemon = _daemon(tmp_path, db_config, emulator, AMOSYNC_SYNC__POLL_INTERVAL_S="3600")
    try:
        daemon.start()
        daemon.wait_health(200)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        # the daemon is down: amoCRM's posts fail, and here one failure disables the hook
        emulator.admin("PATCH", "webhooks/controls", {"disable_after": 0, "retry": False})
        _register(daemon)
        (contact,) = _contacts(engine, 1)
        emulator.admin("PATCH", f"contacts/{contact}", {"name": "Posted to nobody"})
        emulator.admin("POST", "webhooks/idle", {"timeout_s": 10})
        assert _deliveries(emulator, contact) == ["failed"]
        shown = amosync("webhooks", "status", env=env_for(daemon))
        assert "DISABLED by amoCRM" in shown.stdout, shown.stdout + shown.stderr
        daemon.start()  # again, on the same port
        # the leader's first subscription check (5 s after it leads) finds the hook disabled
        state = wait_for(
            "degraded",
            lambda: (s := _webhooks_state(daemon)) and s["state"] == "degraded" and s,
            timeout=30,
        )
        assert "disabled" in state["reason"]
        assert ": re-subscribed" in _register(daemon)
    finally:
        daemon.kill()
        emulator.stop()
