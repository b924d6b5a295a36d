"""Events, contact custom fields, account info and contact-chat links."""

from __future__ import annotations

import math
from typing import Any

from sync.emulator.context import Ctx
from sync.emulator.model import Event
from sync.emulator.params import Query, comma_values, ints_of, values_of
from sync.emulator.problems import ApiProblem, validation_failed
from sync.emulator.query import Range, date_range
from sync.emulator.render import event_json, field_json, link
from sync.emulator.values import error
from sync.emulator.wire import BadJson, Response, json_response, no_content

ACCOUNT_CREATED_AT = 1_577_836_800


def list_events(ctx: Ctx) -> Response:
    settings = ctx.account.settings
    page, limit = ctx.page_and_limit(min(100, settings.events_page_limit), settings.events_page_limit)
    raw_filter = ctx.request.query.get("filter")
    check = _event_filter(raw_filter if isinstance(raw_filter, dict) else {})
    with_name = "contact_name" in comma_values(ctx.request.query.get("with"))
    with ctx.account.lock:
        matched = [e for e in reversed(ctx.account.events) if check(e)]  # newest first
        chunk = matched[(page - 1) * limit : page * limit + 1]
        items = [event_json(e, ctx.account, ctx.base, with_name) for e in chunk[:limit]]
    if not items:
        return no_content()
    return json_response(200, {
        "_page": page,
        "_links": ctx.page_links(page, limit, len(chunk) > limit),
        "_embedded": {"events": items},
    })  # fmt: skip


def _event_filter(raw: Query) -> Any:
    types = set(comma_values(raw.get("type"))) or None
    entities = {e.rstrip("s") for e in comma_values(raw.get("entity"))} or None
    entity_ids = set(ints_of(raw.get("entity_id")) or []) if "entity_id" in raw else None
    creators = set(ints_of(raw.get("created_by")) or []) if "created_by" in raw else None
    span = date_range(raw["created_at"], True) if "created_at" in raw else Range()

    def check(event: Event) -> bool:
        return (
            (types is None or event.type in types)
            and (entities is None or event.entity_type in entities)
            and (entity_ids is None or event.entity_id in entity_ids)
            and (creators is None or event.created_by in creators)
            and span.holds(event.created_at)
        )

    return check


def list_custom_fields(ctx: Ctx) -> Response:
    page, limit = ctx.page_and_limit(50, 250)
    raw_filter = ctx.request.query.get("filter")
    raw_filter = raw_filter if isinstance(raw_filter, dict) else {}
    types = set(comma_values(raw_filter.get("type"))) or None
    ids = set(ints_of(raw_filter.get("id")) or []) if "id" in raw_filter else None
    fields = sorted(ctx.account.fields.values(), key=lambda f: (f.sort, f.id))
    chosen = [f for f in fields if (types is None or f.type in types) and (ids is None or f.id in ids)]
    items = chosen[(page - 1) * limit : page * limit]
    if not items:
        return no_content()
    return json_response(200, {
        "_total_items": len(chosen),
        "_page": page,
        "_page_count": math.ceil(len(chosen) / limit),
        "_links": ctx.page_links(page, limit, page * limit < len(chosen)),
        "_embedded": {"custom_fields": [_field(ctx, f.id) for f in items]},
    })  # fmt: skip


def get_custom_field(ctx: Ctx, field_id: int) -> Response:
    if field_id not in ctx.account.fields:
        raise ApiProblem(404, f"Cannot GET {ctx.base}{ctx.request.path}")
    return json_response(200, _field(ctx, field_id))


def _field(ctx: Ctx, field_id: int) -> dict[str, Any]:
    return field_json(ctx.account.fields[field_id], ctx.account.settings.account_id, ctx.base)


def get_account(ctx: Ctx) -> Response:
    settings, wanted = ctx.account.settings, set(comma_values(ctx.request.query.get("with")))
    data: dict[str, Any] = {
        "id": settings.account_id, "name": "amoCRM emulator", "subdomain": settings.subdomain,
        "created_at": ACCOUNT_CREATED_AT, "created_by": 8_000_001,
        "updated_at": ACCOUNT_CREATED_AT, "updated_by": 8_000_001,
        "current_user_id": 8_000_001, "country": "RU", "currency": "RUB",
        "currency_symbol": "₽", "customers_mode": "segments", "is_unsorted_on": True,
        "mobile_feature_version": 0, "is_loss_reason_enabled": True, "is_helpbot_enabled": False,
        "is_technical_account": False, "contact_name_display_order": 1,
        "_links": link(f"{ctx.base}/api/v4/account"),
    }  # fmt: skip
    scalars = {"amojo_id": "a1b2c3d4-0000-4000-8000-emulator0001", "version": 1,
               "drive_url": "https://drive-b.amocrm.ru",
               "is_api_filter_enabled": ctx.filters_enabled}  # fmt: skip
    data.update({k: v for k, v in scalars.items() if k in wanted})
    embedded = _account_embedded(wanted)
    if embedded:
        data["_embedded"] = embedded
    return json_response(200, data)


def _account_embedded(wanted: set[str]) -> dict[str, Any]:
    embedded: dict[str, Any] = {}
    if "users_groups" in wanted:
        embedded["users_groups"] = [{"id": 0, "name": "Отдел продаж", "uuid": None},
                                    {"id": 101, "name": "Продажи", "uuid": None},
                                    {"id": 102, "name": "Поддержка", "uuid": None}]  # fmt: skip
    if "task_types" in wanted:
        embedded["task_types"] = [{"id": 1, "name": "Связаться", "color": None, "icon_id": None,
                                   "code": "FOLLOW_UP"}]  # fmt: skip
    if "datetime_settings" in wanted:
        embedded["datetime_settings"] = {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y",
                                         "short_time_pattern": "H:i", "date_format": "d.m.Y",
                                         "time_format": "H:i:s", "timezone": "Europe/Moscow",
                                         "timezone_offset": "+03:00"}  # fmt: skip
    return embedded


def list_chats(ctx: Ctx) -> Response:
    query = ctx.request.query
    contact_ids, chat_ids = ints_of(query.get("contact_id")), values_of(query.get("chat_id"))
    if ("contact_id" in query) == ("chat_id" in query) or contact_ids is None:
        raise ApiProblem(400, "Pass either contact_id or chat_id (integers / chat uuids)")
    with ctx.account.lock:
        links = [
            link_ for link_ in ctx.account.chat_links.values()
            if (link_.contact_id in contact_ids or link_.chat_id in chat_ids)
            and ctx.account.live(link_.contact_id) is not None
        ]  # fmt: skip
    if not links:
        return no_content()
    items = [{"chat_id": c.chat_id, "contact_id": c.contact_id, "id": c.id} for c in links]
    return json_response(200, {"_total_items": len(items), "_embedded": {"chats": items}})


def link_chats(ctx: Ctx) -> Response:
    try:
        body = ctx.request.json()
    except BadJson as exc:
        raise ApiProblem(400, "Request body is not valid JSON") from exc
    if not body:
        raise ApiProblem(400, "Request data can not be empty")
    items = body if isinstance(body, list) else [body]
    if len(items) > ctx.account.settings.max_batch:
        raise ApiProblem(422, f"Limit {ctx.account.settings.max_batch} per page")
    with ctx.account.lock:
        _check_chat_items(ctx, items)
        linked = [_link_one(ctx, item, index) for index, item in enumerate(items)]
    return json_response(200, {"_total_items": len(linked), "_embedded": {"chats": linked}})


def _check_chat_items(ctx: Ctx, items: list[Any]) -> None:
    rejected = []
    for index, item in enumerate(items):
        errors = []
        item = item if isinstance(item, dict) else {}
        contact_id, chat_id = item.get("contact_id"), item.get("chat_id")
        if not isinstance(contact_id, int) or ctx.account.live(contact_id) is None:
            errors.append(error("NotFound", "contact_id", "Contact not found."))
        if not isinstance(chat_id, str) or not chat_id.strip():
            errors.append(error("NotBlank", "chat_id", "This value should not be blank."))
        if errors:
            rejected.append({"request_id": str(item.get("request_id", index)), "errors": errors})
    if rejected:
        raise validation_failed(rejected)


def _link_one(ctx: Ctx, item: dict[str, Any], index: int) -> dict[str, Any]:
    chat = ctx.account.link_chat(item["contact_id"], item["chat_id"])
    return {"chat_id": chat.chat_id, "contact_id": chat.contact_id, "id": chat.id,
            "request_id": str(item.get("request_id", index))}  # fmt: skip
