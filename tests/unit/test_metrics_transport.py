"""The daemon counts amoCRM's answers and tells its health through the client's observed
transport (sync.amo.observe), without an httpx type leaving sync/amo."""

from __future__ import annotations

import httpx
import pytest

from sync.amo.observe import ObservedTransport
from sync.daemon.health import Health
from sync.daemon.metrics import Metrics, _AmoTraffic


def _client(handler: httpx.MockTransport, metrics: Metrics, health: Health) -> httpx.Client:
    transport = ObservedTransport(handler, _AmoTraffic(metrics, health))
    return httpx.Client(transport=transport, base_url="https://example.amocrm.ru:8443")


def _count(metrics: Metrics, method: str, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "amosync_amocrm_requests_total", {"method": method, "status": status}
    )


def test_answers_are_counted_by_method_and_status_and_429s_apart() -> None:
    metrics, health = Metrics(), Health(poll_interval_s=60)
    statuses = iter([200, 429, 200])
    handler = httpx.MockTransport(lambda request: httpx.Response(next(statuses)))
    with _client(handler, metrics, health) as client:
        client.get("/api/v4/contacts")
        client.get("/api/v4/contacts")
        client.patch("/api/v4/contacts", json=[])
    assert _count(metrics, "GET", "200") == 1
    assert _count(metrics, "GET", "429") == 1
    assert _count(metrics, "PATCH", "200") == 1
    assert metrics.registry.get_sample_value("amosync_amocrm_rate_limited_total") == 1


def test_a_network_failure_is_counted_and_named_with_host_and_port() -> None:
    metrics, health = Metrics(), Health(poll_interval_s=60)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with (
        _client(httpx.MockTransport(refuse), metrics, health) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/api/v4/account")
    assert _count(metrics, "GET", "error") == 1
    assert health._amo.failure is not None
    assert "example.amocrm.ru:8443" in health._amo.failure
