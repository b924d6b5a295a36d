"""The admin HTTP API under `/_emulator/`: the Python methods of `Emulator`, over JSON.

e2e tests run the product as a subprocess and drive the emulator through these endpoints.
Errors are plain JSON `{"error": "..."}` with 400/404/405 (or 401 with a wrong admin key).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sync.emulator.faults import FaultRule
from sync.emulator.model import CustomField, EnumOption
from sync.emulator.problems import ApiProblem
from sync.emulator.webhooks_admin import WEBHOOK_ADMIN_ROUTES
from sync.emulator.wire import PLAIN_JSON, BadJson, Request, Response, json_response

if TYPE_CHECKING:
    from sync.emulator.core import Emulator

AdminHandler = Callable[["Emulator", Request, list[str]], Any]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def handle_admin(emulator: Emulator, request: Request) -> Response:
    key = emulator.settings.admin_key
    if key is not None and not hmac.compare_digest(request.header("x-emulator-key") or "", key):
        return _error(401, "wrong or missing X-Emulator-Key")
    path = request.path.removeprefix("/_emulator").rstrip("/") or "/"
    try:
        return json_response(200, _route(emulator, request, path), PLAIN_JSON)
    except AdminError as exc:
        return _error(exc.status, str(exc))
    except ApiProblem as exc:
        return json_response(exc.status, exc.body, PLAIN_JSON)
    except LookupError as exc:
        return _error(404, str(exc.args[0] if exc.args else exc))
    except (BadJson, TypeError, ValueError) as exc:
        return _error(400, str(exc))


def _route(emulator: Emulator, request: Request, path: str) -> Any:
    for pattern, handlers in ADMIN_ROUTES:
        match = re.fullmatch(pattern, path)
        if match is None:
            continue
        handler = handlers.get(request.method)
        if handler is None:
            raise AdminError(405, f"{request.method} not allowed on {path}")
        return handler(emulator, request, list(match.groups()))
    raise AdminError(404, f"no admin endpoint {path}")


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message}, PLAIN_JSON)


def _body(request: Request, default: Any = None) -> Any:
    data = request.json()
    return default if data is None else data


def _object(request: Request) -> dict[str, Any]:
    data = _body(request, {})
    if not isinstance(data, dict):
        raise AdminError(400, "expected a JSON object")
    return data


# --- handlers -------------------------------------------------------------------------------


def _state(emulator: Emulator, request: Request, args: list[str]) -> Any:
    return emulator.state()


def _reset(emulator: Emulator, request: Request, args: list[str]) -> Any:
    emulator.reset()
    return {"ok": True, "long_lived_token": emulator.long_lived_token}


def _create(emulator: Emulator, request: Request, args: list[str]) -> Any:
    data = _body(request, [])
    return {"ids": emulator.create_contacts(data if isinstance(data, list) else [data])}


def _bulk_edit(emulator: Emulator, request: Request, args: list[str]) -> Any:
    """An array of contacts with ids, or `{"contacts": [...], "updated_at": T}` to put them all
    into the second T."""
    data: Any = _body(request, [])
    at = None
    if isinstance(data, dict):
        data, at = data.get("contacts"), data.get("updated_at")
    if not isinstance(data, list):
        raise AdminError(400, "expected a JSON array of contacts with ids, or an object with one")
    return {"updated_at": emulator.update_contacts(data, at)}


def _every_contact(emulator: Emulator, request: Request, args: list[str]) -> Any:
    raw = request.query.get("deleted")
    choices = {None: None, "true": True, "1": True, "false": False, "0": False}
    if raw not in choices:
        raise AdminError(400, "deleted must be true or false")
    return emulator.contacts(choices[raw], f"http://{request.header('host') or 'localhost'}")


def _read(emulator: Emulator, request: Request, args: list[str]) -> Any:
    contact = emulator.contact(int(args[0]), f"http://{request.header('host') or 'localhost'}")
    if contact is None:
        raise AdminError(404, f"no contact {args[0]}")
    return contact


def _edit(emulator: Emulator, request: Request, args: list[str]) -> Any:
    return {"updated_at": emulator.update_contacts([{**_object(request), "id": int(args[0])}])}


def _delete(emulator: Emulator, request: Request, args: list[str]) -> Any:
    raw = request.query.get("event", "true")
    if raw not in ("true", "false"):
        raise AdminError(400, "event must be true or false")
    emulator.delete_contact(int(args[0]), event=raw == "true")
    return {"ok": True}


def _restore(emulator: Emulator, request: Request, args: list[str]) -> Any:
    emulator.restore_contact(int(args[0]))
    return {"ok": True}


def _touch(emulator: Emulator, request: Request, args: list[str]) -> Any:
    data = _object(request)
    touched = emulator.touch_contacts(data.get("ids"), data.get("count"), data.get("updated_at"))
    return {"ids": touched}


def _chat(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "GET":
        return emulator.chat_links()
    data = _object(request)
    return emulator.link_chat(int(data["contact_id"]), str(data["chat_id"]))


def _clock(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "POST":
        _clock_action(emulator, _object(request))
    return emulator.clock.state()


def _clock_action(emulator: Emulator, data: dict[str, Any]) -> None:
    action, clock = data.get("action"), emulator.clock
    if action == "freeze":
        clock.freeze(data.get("at"))
    elif action == "unfreeze":
        clock.unfreeze()
    elif action == "advance":
        clock.advance(float(data["seconds"]))
    elif action == "set":
        clock.set(float(data["at"]))
    else:
        raise AdminError(400, "action must be freeze, unfreeze, advance or set")


def _faults(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "POST":
        data = _body(request, [])
        rules = [FaultRule.from_json(d) for d in (data if isinstance(data, list) else [data])]
        return {"ids": [emulator.add_fault(rule) for rule in rules]}
    if request.method == "DELETE":
        emulator.clear_faults()
    return emulator.faults()


def _fault(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if not emulator.remove_fault(int(args[0])):
        raise AdminError(404, f"no fault {args[0]}")
    return {"ok": True}


def _controls(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "PATCH":
        return asdict(emulator.set_controls(**_object(request)))
    return asdict(emulator.controls())


def _add_field(emulator: Emulator, request: Request, args: list[str]) -> Any:
    """`{"id", "name", "type", "code"?, "sort"?, "enums"?: [{"id", "value", "sort"?}]}`: a field
    created in amoCRM by an administrator (after the client's last pull)."""
    data = _object(request)
    missing = [k for k in ("id", "name", "type") if k not in data]
    if missing:
        raise AdminError(400, f"a field needs {', '.join(missing)}")
    enums = [EnumOption(int(e["id"]), str(e["value"]), int(e.get("sort", 500)))
             for e in data.get("enums") or ()]  # fmt: skip
    field = CustomField(int(data["id"]), str(data["name"]), str(data["type"]), data.get("code"),
                        int(data.get("sort", 600)), enums or None)  # fmt: skip
    emulator.account.add_field(field)
    return {"ok": True, "id": field.id}


def _unblock(emulator: Emulator, request: Request, args: list[str]) -> Any:
    emulator.unblock()
    return {"ok": True}


def _code(emulator: Emulator, request: Request, args: list[str]) -> Any:
    return {"code": emulator.issue_auth_code()}


def _tokens(emulator: Emulator, request: Request, args: list[str]) -> Any:
    return emulator.issue_tokens()


def _expire(emulator: Emulator, request: Request, args: list[str]) -> Any:
    emulator.expire_access_tokens()
    return {"ok": True}


def _revoke(emulator: Emulator, request: Request, args: list[str]) -> Any:
    emulator.revoke_all_tokens()
    return {"ok": True}


def _requests(emulator: Emulator, request: Request, args: list[str]) -> Any:
    if request.method == "DELETE":
        emulator.clear_requests()
        return []
    return emulator.requests()


ADMIN_ROUTES: list[tuple[str, dict[str, AdminHandler]]] = [
    (r"/state", {"GET": _state}),
    (r"/reset", {"POST": _reset}),
    (r"/contacts", {"GET": _every_contact, "POST": _create, "PATCH": _bulk_edit}),
    (r"/contacts/touch", {"POST": _touch}),
    (r"/contacts/(\d+)", {"GET": _read, "PATCH": _edit, "DELETE": _delete}),
    (r"/contacts/(\d+)/delete", {"POST": _delete}),
    (r"/contacts/(\d+)/restore", {"POST": _restore}),
    (r"/chats", {"GET": _chat, "POST": _chat}),
    (r"/clock", {"GET": _clock, "POST": _clock}),
    (r"/faults", {"GET": _faults, "POST": _faults, "DELETE": _faults}),
    (r"/faults/(\d+)", {"DELETE": _fault}),
    (r"/controls", {"GET": _controls, "PATCH": _controls}),
    (r"/custom_fields", {"POST": _add_field}),
    (r"/unblock", {"POST": _unblock}),
    (r"/oauth/code", {"POST": _code}),
    (r"/oauth/tokens", {"POST": _tokens}),
    (r"/tokens/expire", {"POST": _expire}),
    (r"/tokens/revoke", {"POST": _revoke}),
    (r"/requests", {"GET": _requests, "DELETE": _requests}),
    *WEBHOOK_ADMIN_ROUTES,
]
