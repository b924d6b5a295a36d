"""/healthz with webhooks: degraded is 200, not down; a longer poll interval does not make a pull
stale; the subscription check reads amoCRM's list of webhooks."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from structlog.testing import capture_logs

from sync.config import Config, DaemonConfig, Secret, WebhooksConfig
from sync.daemon.metrics import Metrics
from sync.daemon.server import HOOK_PREFIX, HookRoute
from sync.daemon.webhooks.daemon_hooks import DaemonHooks, subscription_state
from tests.unit.test_health import leader

SECRET = "0123456789abcdef0123"
PATH = f"/webhooks/amocrm/{SECRET}"


def test_degraded_webhooks_answer_200_degraded_and_failures_still_503() -> None:
    health, _ = leader()
    health.job_succeeded("pull")
    state: dict[str, Any] = {"state": "degraded", "reason": "hooks lost"}
    health.set_webhooks(lambda: state)
    code, body = health.report()
    assert (code, body["status"]) == (200, "degraded")
    assert body["webhooks"]["state"] == "degraded"
    assert body["warnings"] == ["webhooks_degraded: hooks lost"]
    state["state"] = "healthy"
    assert health.report()[1]["status"] == "ok"
    state["state"] = "degraded"
    health.database_failed("connection refused")
    code, body = health.report()
    assert (code, body["status"]) == (503, "failing")


def test_a_longer_poll_interval_while_hooks_arrive_does_not_make_the_pull_stale() -> None:
    health, clock = leader(poll=10)
    health.job_succeeded("pull")
    health.set_poll_interval(600)
    clock.t += 1000  # > 3 x 10 s, < 3 x 600 s
    assert health.report()[0] == 200
    health.set_poll_interval(10)  # back to the short interval: the long one still counts ...
    assert health.report()[0] == 200
    health.job_succeeded("pull")  # ... until the next good pull
    clock.t += 31
    assert health.report()[1]["reasons"][0].startswith("pull_stale")


def test_the_route_compares_the_whole_secret() -> None:
    route = HookRoute("0123456789abcdef0123", receive=lambda hint: None)
    assert route.matches(PATH)
    assert route.matches(PATH + "/")  # amoCRM posts to the destination as registered
    assert not route.matches(PATH + "4")
    assert not route.matches(PATH[:-1])
    assert not route.matches(HOOK_PREFIX)
    assert not HookRoute("", receive=lambda hint: None).matches(HOOK_PREFIX)
    assert "0123456789abcdef0123" not in repr(route)


def test_the_subscription_is_found_by_its_destination() -> None:
    listed = [
        {"destination": "https://other.example/hook", "disabled": False},
        {"destination": f"https://sync.example.com{PATH}", "disabled": True},
    ]
    assert subscription_state(listed, PATH) == "disabled"
    listed[1]["disabled"] = False
    assert subscription_state(listed, PATH) == "enabled"
    assert subscription_state(listed[:1], PATH) == "missing"
    assert subscription_state([], PATH) == "missing"

    class Model:  # the SDK-style model objects a client may return instead of dicts
        destination = f"https://sync.example.com{PATH}/"
        disabled = True

    assert subscription_state([Model()], PATH) == "disabled"


class _Client:
    """Stands in for AmoClient.list_webhooks (added by the client's webhook methods)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def list_webhooks(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _hooks(client: object) -> DaemonHooks:
    config = Config(
        webhooks=WebhooksConfig(enabled=True, secret=Secret(SECRET)),
        daemon=DaemonConfig(http_port=8085),
    )
    health, _ = leader()
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    return DaemonHooks(config, engine, Metrics(), health, client)


def test_the_leader_degrades_when_amocrm_reports_the_hook_disabled() -> None:
    client = _Client([{"destination": f"https://sync.example.com{PATH}", "disabled": True}])
    hooks = _hooks(client)
    hooks.watch.hook()
    hooks.check_subscription()
    assert hooks.describe()["state"] == "degraded"
    assert "disabled" in hooks.describe()["reason"]
    client.answer = [{"destination": f"https://sync.example.com{PATH}", "disabled": False}]
    hooks.check_subscription()
    assert hooks.describe()["state"] == "healthy"


def test_a_failed_check_is_logged_without_the_secret() -> None:
    client = _Client(RuntimeError(f"GET /api/v4/webhooks?filter[destination]=x{PATH} failed"))
    hooks = _hooks(client)
    with capture_logs() as logs:
        hooks.check_subscription()
    (event,) = [e for e in logs if e["event"] == "webhooks_check_failed"]
    assert SECRET not in event["error"]
    assert hooks.describe()["state"] == "quiet"  # no verdict from a failed check


def test_a_short_secret_and_plain_http_are_warned_about_once_when_the_daemon_starts() -> None:
    weak = WebhooksConfig(enabled=True, secret=Secret("test-secret"),
                          public_url="http://hooks.internal.example")  # fmt: skip
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    for webhooks, expected in ((weak, 2), (WebhooksConfig(enabled=True, secret=Secret(SECRET)), 0)):
        config = Config(webhooks=webhooks, daemon=DaemonConfig(http_port=8085))
        hooks = DaemonHooks(config, engine, Metrics(), leader()[0], None)
        with capture_logs() as logs:
            hooks.start()
        hooks.close()
        warned = [e for e in logs if e["event"] == "webhooks_weak_config"]
        assert len(warned) == expected
        assert all(e["log_level"] == "warning" and "test-secret" not in str(e) for e in warned)
