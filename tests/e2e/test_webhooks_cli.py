"""`amosync webhooks register | status | unregister` as a user runs them: the installed command
as a subprocess, the emulator on 127.0.0.1 (its /api/v4/webhooks and real hook deliveries to a
local receiver), a real PostgreSQL. The secret never appears in anything printed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.runs import RunStore
from sync.emulator import Emulator, FaultRule
from tests.e2e.cli import amosync
from tests.integration.amo_emulator import running
from tests.integration.hook_receiver import Receiver, receiving

SECRET = "e2e-Secret_0123456789abcdefXYZ"
OTHER_SECRET = "e2e-Rotated_9876543210zyxwvuQRS"
EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]


class Setup:
    def __init__(self, tmp_path: Path, emulator: Emulator, base_url: str,
                 db: DatabaseConfig, receiver: Receiver) -> None:  # fmt: skip
        self.tmp_path, self.emulator, self.base_url = tmp_path, emulator, base_url
        self.db, self.receiver = db, receiver
        self.public_url = f"http://127.0.0.1:{receiver.port}"
        self.outputs: list[str] = []

    def config(self, *, secret: str = SECRET, enabled: bool = True, public_url: str | None = None,
               name: str = "amosync.toml") -> Path:  # fmt: skip
        path = self.tmp_path / name
        path.write_text(f"""
[amocrm]
base_url = "{self.base_url}"
access_token = "{self.emulator.long_lived_token}"
max_rps = 50
max_retries = 0

[database]
url = "{self.db.url.reveal()}"
schema = "{self.db.schema}"

[webhooks]
enabled = {"true" if enabled else "false"}
public_url = "{self.public_url if public_url is None else public_url}"
secret = "{secret}"
""", encoding="utf-8")  # fmt: skip
        return path

    def run(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        done = amosync("--config", str(config), "webhooks", *args)
        self.outputs.append(done.stdout + done.stderr)
        return done

    def destination(self, secret: str = SECRET) -> str:
        return f"{self.public_url}/webhooks/amocrm/{secret}"


@pytest.fixture
def setup(tmp_path: Path, db_config: DatabaseConfig) -> Iterator[Setup]:
    with receiving() as receiver, running(contacts=20) as (emulator, base_url):
        setup = Setup(tmp_path, emulator, base_url, db_config, receiver)
        yield setup
        emulator.webhooks.close()
    for output in setup.outputs:  # whatever each test did, the secrets were never printed
        assert SECRET not in output
        assert OTHER_SECRET not in output


def test_register_is_idempotent_and_hooks_reach_the_destination(setup: Setup) -> None:
    config = setup.config()
    first = setup.run(config, "register")
    assert first.returncode == 0, first.stderr
    masked = f"{setup.public_url}/webhooks/amocrm/e2e-…"
    assert f"{masked}: created" in first.stdout
    (hook,) = setup.emulator.webhooks.list()
    assert hook.destination == setup.destination()
    assert hook.settings == EVENTS
    second = setup.run(config, "register")
    assert second.returncode == 0, second.stderr
    assert "already subscribed, left as it is" in second.stdout
    assert [h.id for h in setup.emulator.webhooks.list()] == [hook.id]
    setup.emulator.touch_contacts(count=1)  # amoCRM now posts to the daemon's hook path
    (received,) = setup.receiver.wait_for(1)
    assert received.path == f"/webhooks/amocrm/{SECRET}"
    assert len(received.entities("update")) == 1


def test_status_shows_the_subscription_and_the_last_hook(setup: Setup, engine: Engine) -> None:
    config = setup.config()
    before = setup.run(config, "status")
    assert before.returncode == 0, before.stderr
    assert "subscription: none (run `amosync webhooks register`)" in before.stdout
    assert "last hook received by the daemon: never" in before.stdout
    setup.run(config, "register")
    received_at = int(time.time()) - 42
    with engine.begin() as conn:  # what the daemon writes when a hook arrives
        RunStore(setup.db.schema).set_state(conn, "webhooks.last_hook",
                                            {"received_at": received_at})  # fmt: skip
    after = setup.run(config, "status")
    assert after.returncode == 0, after.stderr
    assert ", active, events add_contact, update_contact, delete_contact, restore_contact" \
        in after.stdout  # fmt: skip
    assert "last hook received by the daemon: 20" in after.stdout
    data = json.loads(setup.run(config, "status", "--json").stdout)
    assert data["subscription"]["disabled"] is False
    assert data["subscription"]["settings"] == EVENTS
    assert data["destination"] == f"{setup.public_url}/webhooks/amocrm/e2e-…"
    assert data["last_hook_received_at"].startswith("20")


def test_a_hook_amocrm_disabled_shows_and_is_subscribed_again(setup: Setup) -> None:
    config = setup.config()
    setup.run(config, "register")
    setup.emulator.webhooks.dispatcher.set_controls({"retry": False, "disable_after": 0})
    setup.receiver.status = 500  # the daemon is failing: amoCRM disables the hook
    setup.emulator.touch_contacts(count=1)
    assert setup.emulator.webhooks.dispatcher.wait_idle(15)
    shown = setup.run(config, "status")
    assert "DISABLED by amoCRM (too many failed deliveries)" in shown.stdout
    assert json.loads(setup.run(config, "status", "--json").stdout)["subscription"]["disabled"]
    again = setup.run(config, "register")
    assert again.returncode == 0, again.stderr
    assert ": re-subscribed" in again.stdout
    (hook,) = setup.emulator.webhooks.list()
    assert not hook.disabled
    setup.receiver.status = 200
    setup.emulator.touch_contacts(count=1)
    assert setup.emulator.webhooks.dispatcher.wait_idle(15)
    assert setup.emulator.webhooks.dispatcher.deliveries()[-1]["outcome"] == "delivered"


def test_a_new_secret_replaces_the_old_subscription(setup: Setup) -> None:
    setup.run(setup.config(), "register")
    rotated = setup.config(secret=OTHER_SECRET, name="rotated.toml")
    shown = setup.run(rotated, "status")
    assert "stale subscription (an old secret; register removes it)" in shown.stdout
    done = setup.run(rotated, "register")
    assert done.returncode == 0, done.stderr
    assert "removed a stale subscription (an old secret)" in done.stdout
    assert [h.destination for h in setup.emulator.webhooks.list()] == [
        setup.destination(OTHER_SECRET)
    ]


def test_unregister(setup: Setup) -> None:
    config = setup.config()
    setup.run(config, "register")
    setup.emulator.webhooks.subscribe(  # somebody else's hook on the account stays
        {"destination": "https://other.example.com/hook", "settings": EVENTS}, 1
    )
    gone = setup.run(config, "unregister")
    assert gone.returncode == 0, gone.stderr
    assert "unregistered: http://127.0.0.1" in gone.stdout
    assert [h.destination for h in setup.emulator.webhooks.list()] == [
        "https://other.example.com/hook"
    ]
    again = setup.run(config, "unregister")
    assert again.returncode == 0
    assert "nothing to unregister" in again.stdout


def test_configuration_errors_exit_2_in_one_message(setup: Setup) -> None:
    path = setup.config(enabled=False)
    off = setup.run(path, "register")
    assert off.returncode == 2
    assert f"webhooks.enabled (file {path}): must be true before registering" in off.stderr
    assert "Traceback" not in off.stderr
    no_url = setup.run(setup.config(public_url=""), "status")
    assert no_url.returncode == 2
    assert "webhooks.public_url (not set)" in no_url.stderr
    assert setup.emulator.webhooks.list() == []  # nothing was sent to amoCRM


def test_a_short_secret_and_plain_http_register_with_warnings(setup: Setup) -> None:
    """Allowed (a test stand-in's secret, an internal network), but weak: one line each."""
    public_url = "http://hooks.internal.example:8085"
    done = setup.run(setup.config(secret="test-secret", public_url=public_url), "register")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert "shorter than 16" in warnings[0]
    assert "in clear" in warnings[1]
    assert "test-secret" not in done.stdout + done.stderr
    (hook,) = setup.emulator.webhooks.list()
    assert hook.destination == f"{public_url}/webhooks/amocrm/test-secret"


def test_a_malformed_public_url_is_refused_by_status_even_with_hooks_off(setup: Setup) -> None:
    done = setup.run(setup.config(enabled=False, public_url="sync.example.com"), "status")
    assert done.returncode == 2
    assert "webhooks.public_url" in done.stderr
    assert "absolute" in done.stderr


def test_an_amocrm_failure_is_one_line_exit_1(setup: Setup) -> None:
    setup.emulator.add_fault(FaultRule(kind="payment_required", times=None,
                                       path="/api/v4/webhooks"))  # fmt: skip
    failed = setup.run(setup.config(), "register")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "amosync: the amoCRM account is not paid (402) (GET /api/v4/webhooks -> 402)"
    ]
