"""Users and contact tags: what a client needs to resolve `responsible_user_id` and tag ids."""

from __future__ import annotations

from typing import Any, TypeVar

from sync.emulator.context import Ctx
from sync.emulator.model import Tag, User
from sync.emulator.params import ints_of, values_of
from sync.emulator.problems import ApiProblem
from sync.emulator.render import link, tag_json
from sync.emulator.wire import Response, json_response

T = TypeVar("T")


def list_users(ctx: Ctx) -> Response:
    users = sorted(ctx.account.users.values(), key=lambda u: u.id)
    return ctx.paged("users", users, lambda u: _user_json(ctx, u), counted=True)


def get_user(ctx: Ctx, user_id: int) -> Response:
    user = ctx.account.users.get(user_id)
    if user is None:
        raise ApiProblem(404, f"Cannot GET {ctx.base}{ctx.request.path}")
    return json_response(200, _user_json(ctx, user))


def list_tags(ctx: Ctx) -> Response:
    raw = ctx.request.query.get("filter")
    raw = raw if isinstance(raw, dict) else {}
    ids = set(ints_of(raw.get("id")) or []) if "id" in raw else None
    names = set(values_of(raw.get("name"))) if "name" in raw else None
    text = str(ctx.request.query.get("query") or "").casefold()
    with ctx.account.lock:
        tags = sorted(ctx.account.tags.values(), key=lambda t: t.id)
    chosen = [t for t in tags if _tag_matches(t, ids, names, text)]
    return ctx.paged("tags", chosen, tag_json)


def _tag_matches(tag: Tag, ids: set[int] | None, names: set[str] | None, text: str) -> bool:
    return (
        (ids is None or tag.id in ids)
        and (names is None or tag.name in names)
        and text in tag.name.casefold()
    )


def _user_json(ctx: Ctx, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "lang": "ru",
        "rights": {
            "is_admin": user.id == 8_000_001,
            "is_free": False,
            "is_active": True,
            "group_id": user.group_id or None,
            "role_id": None,
        },
        "_links": link(f"{ctx.base}/api/v4/users/{user.id}"),
    }
