"""Custom-field write shapes → stored read shapes, and the validation errors."""

from __future__ import annotations

from typing import Any

import pytest

from sync.emulator.model import CustomField, EnumOption
from sync.emulator.values import normalise_values

PHONE = CustomField(1, "Телефон", "multitext", "PHONE", 1,
                    [EnumOption(10, "WORK", 1), EnumOption(11, "MOB", 2)])  # fmt: skip
SELECT = CustomField(2, "Источник", "select", None, 2, [EnumOption(20, "Сайт", 1)])
NUMBER = CustomField(3, "Бюджет", "numeric", None, 3)
DATE = CustomField(4, "Дата", "date", None, 4)
CHECK = CustomField(5, "Флаг", "checkbox", None, 5)
TEXT = CustomField(6, "Текст", "text", None, 6)
MOBILE = {"value": "+7", "enum_id": 11, "enum_code": "MOB"}


def run(field: CustomField, raw: Any) -> tuple[Any, list[dict[str, str]]]:
    errors: list[dict[str, str]] = []
    return normalise_values(field, raw, "p", errors), errors


@pytest.mark.parametrize(
    ("field", "raw", "stored"),
    [
        (PHONE, [{"value": "+7", "enum_code": "MOB"}], [MOBILE]),
        (PHONE, [{"value": "+7", "enum_id": 11}], [MOBILE]),
        (PHONE, [{"value": "+7", "enum": "MOB"}], [MOBILE]),  # the primary reference's key
        (PHONE, [{"value": "+7"}], [{"value": "+7", "enum_id": 10, "enum_code": "WORK"}]),
        (SELECT, [{"enum_id": 20}], [{"value": "Сайт", "enum_id": 20}]),
        (SELECT, [{"value": "Сайт"}], [{"value": "Сайт", "enum_id": 20}]),
        (NUMBER, [{"value": 12.5}], [{"value": "12.5"}]),
        (NUMBER, [{"value": "1000"}], [{"value": "1000"}]),
        (DATE, [{"value": "1700000000"}], [{"value": 1_700_000_000}]),
        (CHECK, [{"value": False}], [{"value": False}]),
        (TEXT, [{"value": 42}], [{"value": "42"}]),
        (TEXT, None, None),
        (TEXT, [], None),
        (TEXT, [{"value": ""}], None),
    ],
)  # fmt: skip
def test_accepted_shapes(field: CustomField, raw: Any, stored: Any) -> None:
    assert run(field, raw) == (stored, [])


@pytest.mark.parametrize(
    ("field", "raw", "code", "path"),
    [
        (PHONE, [{"value": "+7", "enum_code": "X"}], "NotSupportedChoice", "p.0.enum_code"),
        (SELECT, [{"enum_id": 99}], "NotSupportedChoice", "p.0.enum_id"),
        (SELECT, [{}], "NotBlank", "p.0.enum_id"),
        (SELECT, [{"enum_id": 20}, {"enum_id": 20}], "Count", "p"),
        (NUMBER, [{"value": "abc"}], "InvalidType", "p.0.value"),
        (NUMBER, [{"value": True}], "InvalidType", "p.0.value"),
        (CHECK, [{"value": 1}], "InvalidType", "p.0.value"),
        (DATE, [{"value": "2024-01-01"}], "InvalidType", "p.0.value"),
        (TEXT, "x", "InvalidType", "p"),
        (TEXT, ["x"], "InvalidType", "p.0"),
    ],
)
def test_rejected_shapes(field: CustomField, raw: Any, code: str, path: str) -> None:
    _, errors = run(field, raw)
    assert [(e["code"], e["path"]) for e in errors] == [(code, path)]
