"""The contacts endpoints: list, get one, add, update (batch and single)."""

from __future__ import annotations

from typing import Any

from sync.emulator.context import API_USER, Ctx
from sync.emulator.params import comma_values
from sync.emulator.patches import ContactPatch
from sync.emulator.problems import ApiProblem
from sync.emulator.query import parse_contacts_query, select
from sync.emulator.quirks import contact_numbers, list_order, write_answer
from sync.emulator.render import contact_json, link
from sync.emulator.wire import Response, json_response, no_content
from sync.emulator.writes import parse_batch, parse_entities

EMBEDS = {"leads", "customers", "catalog_elements"}


def list_contacts(ctx: Ctx) -> Response:
    settings = ctx.account.settings
    page, limit = ctx.page_and_limit(settings.default_page_limit, settings.max_page_limit)
    embeds = EMBEDS & set(comma_values(ctx.request.query.get("with")))
    with ctx.account.lock:
        q = parse_contacts_query(ctx.request.query, ctx.account, ctx.filters_enabled)
        q.order_field, q.descending = list_order(q.order_field, q.descending, ctx.quirks)
        if ctx.list_lag_s > 0:
            q.as_of = ctx.clock.now() - ctx.list_lag_s  # GET /contacts/{id} does not lag
        contacts, has_next = select(ctx.account, q, (page - 1) * limit, limit)
        kind_key = ctx.quirks.enum_key
        items = [
            contact_numbers(contact_json(c, ctx.account, ctx.base, embeds, kind_key), ctx.quirks)
            for c in contacts
        ]
    return ctx.page_answer("contacts", page, limit, items, has_next=has_next)


def get_contact(ctx: Ctx, contact_id: int) -> Response:
    embeds = EMBEDS & set(comma_values(ctx.request.query.get("with")))
    with ctx.account.lock:
        contact = ctx.account.live(contact_id)
        if contact is None:
            return no_content()
        data = contact_json(contact, ctx.account, ctx.base, embeds, ctx.quirks.enum_key)
        return json_response(200, contact_numbers(data, ctx.quirks))


def add_contacts(ctx: Ctx) -> Response:
    with ctx.account.lock:
        patches = parse_batch(ctx.body(), ctx.account, update=False)
        now = ctx.clock.now_s()
        created = [(p, ctx.account.create(p, now, _actor(p))) for p in patches]
    items = [
        {"id": c.id, "is_deleted": False, "is_unsorted": False, "request_id": p.request_id,
         "_links": link(f"{ctx.base}/api/v4/contacts/{c.id}")}
        for p, c in created
    ]  # fmt: skip
    return _collection(ctx, items)


def update_contacts(ctx: Ctx) -> Response:
    with ctx.account.lock:
        patches = parse_batch(ctx.body(), ctx.account, update=True)
        items = [_updated(ctx, p) for p in _apply_updates(ctx, patches)]
    return _collection(ctx, items)


def update_contact(ctx: Ctx, contact_id: int) -> Response:
    body = ctx.body()
    if not body:
        raise ApiProblem(400, "Request data can not be empty")
    if not isinstance(body, dict):
        raise ApiProblem(400, "Request data must be one entity (a JSON object)")
    with ctx.account.lock:
        patches = parse_entities([{**body, "id": contact_id}], ctx.account, update=True)
        (patch,) = _apply_updates(ctx, patches)
        return json_response(200, _updated(ctx, patch))


def _apply_updates(ctx: Ctx, patches: list[ContactPatch]) -> list[ContactPatch]:
    now = ctx.clock.now_s()  # one batch shares one updated_at second, as amoCRM does
    for patch in patches:
        ctx.account.update(patch, patch.scalars.get("updated_at", now), _actor(patch))
    return patches


def _updated(ctx: Ctx, patch: ContactPatch) -> dict[str, Any]:
    assert patch.contact_id is not None
    contact = ctx.account.contacts[patch.contact_id]
    return {"id": contact.id, "name": contact.name, "updated_at": contact.updated_at,
            "request_id": patch.request_id,
            "_links": link(f"{ctx.base}/api/v4/contacts/{contact.id}")}  # fmt: skip


def _collection(ctx: Ctx, items: list[dict[str, Any]]) -> Response:
    return json_response(200, {
        "_links": link(f"{ctx.base}/api/v4/contacts"),
        "_embedded": {"contacts": write_answer(items, ctx.quirks)},
    })  # fmt: skip


def _actor(patch: ContactPatch) -> int:
    return int(patch.scalars.get("updated_by", API_USER))
