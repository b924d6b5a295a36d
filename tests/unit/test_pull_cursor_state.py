"""`CursorState.load`: the settled tie seconds, as this code and older code store them."""

from __future__ import annotations

from sync.pull.sink import CursorState


def test_a_value_of_older_code_settles_its_one_second() -> None:
    assert CursorState.load({"updated_at": 500, "tie_settled": 420}).ties_settled == (420,)
    assert CursorState.load({"updated_at": 500}).ties_settled == ()


def test_every_settled_second_loads_sorted_once() -> None:
    value = {"updated_at": 500, "tie_settled": 480, "ties_settled": [480, 300, 420]}
    assert CursorState.load(value).ties_settled == (300, 420, 480)
