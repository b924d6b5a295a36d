"""Events, contact custom fields and contact-chat links."""

from __future__ import annotations

from typing import Any

from sync.emulator.context import Ctx
from sync.emulator.model import Event
from sync.emulator.params import Query, comma_values, ints_of, values_of
from sync.emulator.problems import ApiProblem, validation_failed
from sync.emulator.query import Range, date_range
from sync.emulator.quirks import ordered_events, scrambled, write_answer
from sync.emulator.render import event_json, field_json
from sync.emulator.values import error
from sync.emulator.wire import Response, json_response, no_content


def list_events(ctx: Ctx) -> Response:
    most = ctx.account.settings.events_page_limit
    raw_filter = ctx.request.query.get("filter")
    raw_filter = raw_filter if isinstance(raw_filter, dict) else {}
    _check_entity_ids(raw_filter)
    check = _event_filter(raw_filter, ctx.account.settings.inclusive_date_bounds)
    if not ctx.filters_enabled:
        check = _every_event  # accounts without API filtering ignore `filter[...]` here too
    with_name = "contact_name" in comma_values(ctx.request.query.get("with"))
    page, limit = ctx.page_and_limit(min(100, most), most)
    with ctx.account.lock:  # newest first unless `events_order` says otherwise
        matched = [e for e in ordered_events(ctx.account.events, ctx.quirks) if check(e)]
        chunk = matched[(page - 1) * limit : page * limit]
        items = [event_json(e, ctx.account, ctx.base, with_name) for e in chunk]
    return ctx.page_answer(
        "events", page, limit, scrambled(items, page, ctx.quirks),
        has_next=page * limit < len(matched),
    )  # fmt: skip


def _every_event(event: Event) -> bool:
    return True


def _check_entity_ids(raw: Query) -> None:
    """amoCRM: `filter[entity_id]` takes at most 10 ids and needs exactly one entity type."""
    if "entity_id" not in raw:
        return
    ids = ints_of(raw["entity_id"])
    if ids is None or len(ids) > 10:
        raise ApiProblem(400, "filter[entity_id] takes at most 10 integer ids")
    if len(comma_values(raw.get("entity"))) != 1:
        raise ApiProblem(400, "filter[entity_id] requires exactly one filter[entity]")


def _event_filter(raw: Query, inclusive: bool) -> Any:
    """`inclusive` is the contacts list's bound rule: one account answers both the same way."""
    types = set(comma_values(raw.get("type"))) or None
    entities = {e.rstrip("s") for e in comma_values(raw.get("entity"))} or None
    entity_ids = set(ints_of(raw.get("entity_id")) or []) if "entity_id" in raw else None
    creators = set(ints_of(raw.get("created_by")) or []) if "created_by" in raw else None
    span = date_range(raw["created_at"], inclusive) if "created_at" in raw else Range()

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
    raw_filter = ctx.request.query.get("filter")
    raw_filter = raw_filter if isinstance(raw_filter, dict) else {}
    types = set(comma_values(raw_filter.get("type"))) or None
    ids = set(ints_of(raw_filter.get("id")) or []) if "id" in raw_filter else None
    fields = sorted(ctx.account.fields.values(), key=lambda f: (f.sort, f.id))
    chosen = [
        f for f in fields if (types is None or f.type in types) and (ids is None or f.id in ids)
    ]
    return ctx.paged("custom_fields", chosen, lambda f: _field(ctx, f.id), counted=True)


def get_custom_field(ctx: Ctx, field_id: int) -> Response:
    if field_id not in ctx.account.fields:
        raise ApiProblem(404, f"Cannot GET {ctx.base}{ctx.request.path}")
    return json_response(200, _field(ctx, field_id))


def _field(ctx: Ctx, field_id: int) -> dict[str, Any]:
    return field_json(ctx.account.fields[field_id], ctx.account.settings.account_id, ctx.base)


def list_chats(ctx: Ctx) -> Response:
    """The documented `contact_id=N` / `chat_id=<uuid>`; the array forms too (as amoCRM answers
    them), unless a `chats_*` control plays a stand-in that knows only the scalar form."""
    query, controls = ctx.request.query, ctx.controls
    array = isinstance(query.get("contact_id"), dict) or isinstance(query.get("chat_id"), dict)
    if array and controls is not None and controls.chats_scalar_only:
        raise ApiProblem(400, "contact_id and chat_id take one value")
    ignored = array and controls is not None and controls.chats_array_ignored
    if array and controls is not None and controls.chats_array_empty:
        return no_content()
    contact_ids, chat_ids = ints_of(query.get("contact_id")), values_of(query.get("chat_id"))
    if ("contact_id" in query) == ("chat_id" in query) or contact_ids is None:
        raise ApiProblem(400, "Pass either contact_id or chat_id (integers / chat uuids)")
    wanted_contacts, wanted_chats = set(contact_ids), set(chat_ids)
    with ctx.account.lock:
        every = list(ctx.account.chat_links.values()) if ignored else None
        chosen = every if every is not None else ctx.account.links_of(wanted_contacts, wanted_chats)
        links = [
            link_ for link_ in chosen
            if ctx.account.live(link_.contact_id) is not None
        ]  # fmt: skip
    most = controls.chats_page_limit if controls is not None else None
    page, more = 1, False
    if most:
        page = int(query["page"]) if str(query.get("page", "")).isdigit() else 1
        more, links = len(links) > page * most, links[(page - 1) * most : page * most]
    if not links:
        return no_content()
    items = [{"chat_id": c.chat_id, "contact_id": c.contact_id, "id": c.id} for c in links]
    body: dict[str, Any] = {"_total_items": len(items), "_embedded": {"chats": items}}
    if most and more:
        body["_links"] = ctx.page_links(page, most, True)
    return json_response(200, body)


def link_chats(ctx: Ctx) -> Response:
    body = ctx.body()
    if not body:
        raise ApiProblem(400, "Request data can not be empty")
    items = body if isinstance(body, list) else [body]
    if len(items) > ctx.account.settings.max_batch:
        raise ApiProblem(422, f"Limit {ctx.account.settings.max_batch} per page")
    with ctx.account.lock:
        _check_chat_items(ctx, items)
        linked = [_link_one(ctx, item, index) for index, item in enumerate(items)]
    linked = write_answer(linked, ctx.quirks)
    return json_response(200, {"_total_items": len(linked), "_embedded": {"chats": linked}})


def _check_chat_items(ctx: Ctx, items: list[Any]) -> None:
    rejected = []
    for index, raw in enumerate(items):
        errors = []
        item = raw if isinstance(raw, dict) else {}
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
