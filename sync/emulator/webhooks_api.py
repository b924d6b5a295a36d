"""`/api/v4/webhooks`: subscribe (POST), list (GET, `filter[destination]`), unsubscribe (DELETE).

Shapes follow amoCRM's official PHP SDK (`EntitiesServices/Webhooks.php`, `WebhookModel`):
subscribe answers the webhook model itself; the list has `_total_items` and the models under
`_embedded.webhooks` (204 when there are none); unsubscribe answers 204.
"""

from __future__ import annotations

from sync.emulator.context import API_USER, Ctx
from sync.emulator.render import link
from sync.emulator.webhooks import Webhooks
from sync.emulator.wire import Response, json_response, no_content


def list_webhooks(ctx: Ctx) -> Response:
    filters = ctx.request.query.get("filter")
    wanted = filters.get("destination") if isinstance(filters, dict) else None
    hooks = _hooks(ctx).list(wanted if isinstance(wanted, str) else None)
    if not hooks:
        return no_content()
    return json_response(200, {
        "_total_items": len(hooks),
        "_links": link(f"{ctx.base}/api/v4/webhooks"),
        "_embedded": {"webhooks": [hook.to_json() for hook in hooks]},
    })  # fmt: skip


def subscribe(ctx: Ctx) -> Response:
    hook = _hooks(ctx).subscribe(ctx.body(), API_USER)
    return json_response(200, hook.to_json())


def unsubscribe(ctx: Ctx) -> Response:
    _hooks(ctx).unsubscribe(ctx.body())
    return no_content()


def _hooks(ctx: Ctx) -> Webhooks:
    hooks = ctx.webhooks
    assert isinstance(hooks, Webhooks), "the emulator passes its webhooks in the context"
    return hooks
