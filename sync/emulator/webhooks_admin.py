"""The admin routes of webhooks (`/_emulator/webhooks...`), added to `admin.ADMIN_ROUTES`.

| method and path | does |
|---|---|
| `GET /_emulator/webhooks` | subscriptions (with `recent_failures`), controls, counts |
| `DELETE /_emulator/webhooks` | remove every subscription and what waits for delivery |
| `GET`/`PATCH /_emulator/webhooks/controls` | the delivery knobs (`HookControls`) |
| `GET`/`DELETE /_emulator/webhooks/deliveries` | every post made / forget them |
| `POST /_emulator/webhooks/{id}/enable` | re-enable a disabled hook (its failures forgotten) |
| `POST /_emulator/webhooks/idle` | `{"timeout_s": 10}`: wait until nothing is queued or in flight |
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sync.emulator.wire import Request

if TYPE_CHECKING:
    from sync.emulator.core import Emulator


def _overview(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "DELETE":
        emulator.webhooks.clear()
    return emulator.webhooks.state()


def _controls(emulator: Emulator, request: Request, args: list[str]) -> Any:
    dispatcher = emulator.webhooks.dispatcher
    if request.method == "PATCH":
        changes = request.json()
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of webhook controls")
        return asdict(dispatcher.set_controls(changes))
    return asdict(dispatcher.controls())


def _deliveries(emulator: Emulator, request: Request, args: list[str]) -> Any:
    dispatcher = emulator.webhooks.dispatcher
    if request.method == "DELETE":
        dispatcher.clear_deliveries()
    return dispatcher.deliveries()


def _enable(emulator: Emulator, request: Request, args: list[str]) -> Any:
    return emulator.webhooks.enable(int(args[0])).to_json()


def _idle(emulator: Emulator, request: Request, args: list[str]) -> Any:
    data = request.json() or {}
    timeout = float(data.get("timeout_s", 10.0)) if isinstance(data, dict) else 10.0
    return {"idle": emulator.webhooks.dispatcher.wait_idle(min(timeout, 60.0))}


WEBHOOK_ADMIN_ROUTES: list[tuple[str, dict[str, Any]]] = [
    (r"/webhooks", {"GET": _overview, "DELETE": _overview}),
    (r"/webhooks/controls", {"GET": _controls, "PATCH": _controls}),
    (r"/webhooks/deliveries", {"GET": _deliveries, "DELETE": _deliveries}),
    (r"/webhooks/(\d+)/enable", {"POST": _enable}),
    (r"/webhooks/idle", {"POST": _idle}),
]
