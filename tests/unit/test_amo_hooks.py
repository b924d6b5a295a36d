"""Parsing amoCRM's webhook model: what the emulator and the vendor's SDK agree on, and shapes
that must stop loudly rather than be skipped; no message quotes a destination (its secret)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.amo.hooks import parse_webhook, parse_webhooks
from sync.errors import InvariantError

MODEL = {
    "id": 7, "destination": "https://x.example.com/webhooks/amocrm/top-secret-value",
    "settings": ["add_contact", "update_contact"], "sort": 2, "disabled": False,
    "account_id": 31000001, "created_by": 8000001, "created_at": 1767225600,
    "updated_at": 1767225601,
}  # fmt: skip


def test_a_full_model() -> None:
    hook = parse_webhook(MODEL)
    assert hook.id == 7
    assert hook.settings == ("add_contact", "update_contact")
    assert (hook.sort, hook.disabled, hook.created_at) == (2, False, 1767225600)


def test_disabled_in_the_forms_php_may_send() -> None:
    for value in (True, 1, "1", "true"):
        assert parse_webhook({**MODEL, "disabled": value}).disabled is True
    for value in (False, 0, None, "0"):
        assert parse_webhook({**MODEL, "disabled": value}).disabled is False


def test_lists() -> None:
    assert parse_webhooks(None) == []  # 204
    listed = parse_webhooks({"_total_items": 1, "_embedded": {"webhooks": [MODEL]}})
    assert [h.id for h in listed] == [7]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {**MODEL, "id": "7"},
        {**MODEL, "id": True},
        {**MODEL, "destination": None},
        {**MODEL, "settings": "add_contact"},
        {**MODEL, "settings": [1]},
    ],
)
def test_bad_models_stop_loudly(data: Any) -> None:
    with pytest.raises(InvariantError) as caught:
        parse_webhook(data)
    assert "top-secret-value" not in str(caught.value)


@pytest.mark.parametrize("data", [{}, {"_embedded": {}}, {"_embedded": {"webhooks": {}}}, []])
def test_bad_lists_stop_loudly(data: Any) -> None:
    with pytest.raises(InvariantError):
        parse_webhooks(data)
