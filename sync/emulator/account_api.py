"""`GET /api/v4/account`: the account and the extras its `with=` flags add."""

from __future__ import annotations

from typing import Any

from sync.emulator.context import Ctx
from sync.emulator.params import comma_values
from sync.emulator.render import link
from sync.emulator.wire import Response, json_response

ACCOUNT_CREATED_AT = 1_577_836_800
ENTITY_NAMES = {
    "leads": {
        "ru": {
            "gender": "f",
            "plural_form": {
                "dative": "сделкам",
                "default": "сделки",
                "genitive": "сделок",
                "accusative": "сделки",
                "instrumental": "сделками",
                "prepositional": "сделках",
            },
        }
    }
}


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
    scalars = {"amojo_id": "a1b2c3d4-0000-4000-8000-000000000001", "version": 1,
               "drive_url": "https://drive-b.amocrm.ru",
               "is_api_filter_enabled": ctx.filters_enabled,
               "invoices_settings": {"lang": "ru", "invoices_catalog_id": None}}  # fmt: skip
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
    if "amojo_rights" in wanted:
        embedded["amojo_rights"] = {"can_direct": True, "can_create_groups": True}
    if "entity_names" in wanted:
        embedded["entity_names"] = ENTITY_NAMES
    if "datetime_settings" in wanted:
        embedded["datetime_settings"] = {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y",
                                         "short_time_pattern": "H:i", "date_format": "d.m.Y",
                                         "time_format": "H:i:s", "timezone": "Europe/Moscow",
                                         "timezone_offset": "+03:00"}  # fmt: skip
    return embedded
