"""The API route table: (method, path pattern) → handler, with 404/405 as amoCRM answers them."""

from __future__ import annotations

import re
from collections.abc import Callable

from sync.emulator import account_api, contacts_api, other_api, webhooks_api
from sync.emulator.context import Ctx
from sync.emulator.problems import ApiProblem
from sync.emulator.wire import Response

Handler = Callable[..., Response]

ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"/api/v4/contacts"), {
        "GET": contacts_api.list_contacts,
        "POST": contacts_api.add_contacts,
        "PATCH": contacts_api.update_contacts,
    }),
    (re.compile(r"/api/v4/contacts/chats"), {
        "GET": other_api.list_chats,
        "POST": other_api.link_chats,
    }),
    (re.compile(r"/api/v4/contacts/custom_fields"), {"GET": other_api.list_custom_fields}),
    (re.compile(r"/api/v4/contacts/custom_fields/(\d+)"), {"GET": other_api.get_custom_field}),
    (re.compile(r"/api/v4/contacts/(\d+)"), {
        "GET": contacts_api.get_contact,
        "PATCH": contacts_api.update_contact,
    }),
    (re.compile(r"/api/v4/events"), {"GET": other_api.list_events}),
    (re.compile(r"/api/v4/account"), {"GET": account_api.get_account}),
    (re.compile(r"/api/v4/webhooks"), {
        "GET": webhooks_api.list_webhooks,
        "POST": webhooks_api.subscribe,
        "DELETE": webhooks_api.unsubscribe,
    }),
]  # fmt: skip

LIST_PATHS = ("/api/v4/contacts", "/api/v4/events")


def dispatch(ctx: Ctx) -> Response:
    """Run the handler for the request, or raise the 404/405 problem."""
    method, path = ctx.request.method, normalise_path(ctx.request.path)
    for pattern, handlers in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        handler = handlers.get(method)
        if handler is None:
            raise ApiProblem(405, "Method Not Allowed")
        return handler(ctx, *(int(group) for group in match.groups()))
    raise ApiProblem(404, f"Cannot {method} {ctx.base}{ctx.request.path}")


def normalise_path(path: str) -> str:
    return path.rstrip("/") or "/"


def is_write(method: str) -> bool:
    return method in ("POST", "PATCH", "PUT", "DELETE")
