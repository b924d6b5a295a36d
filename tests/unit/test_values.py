# ruff: noqa: RUF001 - Cyrillic names, as amoCRM accounts hold them
"""`sync.core.values`: the one comparison of amoCRM values shared by push's merge and the client."""

from __future__ import annotations

import pytest

from sync.core.values import as_text, same_scalar


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, None), ("", None), ("  ", None), (" a ", "a"), (True, "true"), (False, "false"),
     (5.0, "5"), (5.5, "5.5"), (7, "7")],
)  # fmt: skip
def test_as_text(value: object, text: str | None) -> None:
    assert as_text(value) == text


def test_same_scalar() -> None:
    assert same_scalar(5, "5.0") is False  # text of a string is kept as written
    assert same_scalar(5.0, "5")
    assert same_scalar("", None)
    assert same_scalar(" ", None)  # blank text is cleared text, as amoCRM shows it
    assert same_scalar("WORK", "work", key="enum_code")
    assert not same_scalar("WORK", "work")
    assert not same_scalar("x", None)


def test_object_values_compare_whatever_their_key_order() -> None:
    """amoCRM gives a legal_entity's keys in its order, jsonb stores them shortest first: the
    same object either way (an audit's stand-in turned a local clear into a false conflict)."""
    amo = {
        "name": "ООО",
        "entity_type": None,
        "vat_id": "77",
        "kpp": "7701",
        "n": [{"b": 1, "a": 2.0}],
    }
    jsonb = {
        "n": [{"a": 2, "b": 1}],
        "kpp": "7701",
        "name": "ООО",
        "vat_id": "77",
        "entity_type": None,
    }
    assert same_scalar(amo, jsonb)
    assert as_text(amo) == as_text(jsonb)
    assert not same_scalar(amo, {**jsonb, "kpp": "7702"})
    assert not same_scalar(amo, {**jsonb, "n": [{"a": 1, "b": 2}]})


def test_the_merge_sees_no_change_in_a_reordered_object_value() -> None:
    from sync.push.conflicts import same

    amo = [{"value": {"file_uuid": "u", "file_name": "a.pdf", "file_size": 10}}]
    jsonb = [{"value": {"file_name": "a.pdf", "file_size": 10, "file_uuid": "u"}}]
    assert same(amo, jsonb)
    assert not same(amo, [{"value": {"file_name": "b.pdf", "file_size": 10, "file_uuid": "u"}}])
