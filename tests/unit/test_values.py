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
