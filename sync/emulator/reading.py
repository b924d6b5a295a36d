"""What `Emulator.handle` reads off a request before and around its endpoint: is it the contacts
list, which page of a list and in what order, how many entities a write carries (faults can aim
at each), the write's body for the request log, the token endpoint's JSON or form body; and the
request id every answer is stamped with."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qsl

from sync.emulator.params import int_param
from sync.emulator.routes import LIST_PATHS, is_write, normalise_path
from sync.emulator.wire import BadJson, Request, Response


def is_contacts_list(request: Request) -> bool:
    return request.method == "GET" and normalise_path(request.path) == "/api/v4/contacts"


def stamped(response: Response) -> Response:
    response.headers.setdefault("X-Request-Id", secrets.token_hex(8))
    return response


def page_of(request: Request) -> int | None:
    if request.method != "GET" or normalise_path(request.path) not in LIST_PATHS:
        return None
    return int_param(request.query, "page", 1)


def order_of(request: Request) -> str | None:
    """The key a list request orders by (`order[id]=asc` → "id"), None when it names none."""
    if page_of(request) is None:
        return None
    order = request.query.get("order")
    return next(iter(order), None) if isinstance(order, dict) and order else None


def batch_size_of(request: Request) -> int | None:
    """How many entities a write carries (for faults that hit only heavy batches)."""
    if not is_write(request.method):
        return None
    body = write_body(request)
    return len(body) if isinstance(body, list) else 1


def write_body(request: Request) -> Any:
    if not is_write(request.method):
        return None
    try:
        return request.json()
    except BadJson:
        return request.body.decode("utf-8", "replace")


def form_of(request: Request) -> dict[str, Any]:
    """The token endpoint takes JSON (amoCRM's docs) or a standard OAuth form body."""
    if "json" in (request.header("content-type") or "") or request.body.lstrip().startswith(b"{"):
        try:
            data = request.json()
        except BadJson:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(parse_qsl(request.body.decode("utf-8", "replace")))
