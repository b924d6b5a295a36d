"""The descending walk's ties across a page boundary (`sync.pull.straddle`): pure parts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.pull.straddle import WalkTies, page_holding


def _items(seconds: list[int]) -> list[dict[str, int]]:
    return [{"id": n, "updated_at": s} for n, s in enumerate(seconds)]


@given(st.integers(0, 1_000_000), st.integers(0, 248))
def test_a_page_that_holds_the_positions_is_found_whenever_one_exists(low: int, width: int) -> None:
    high = low + width
    placed = page_holding(low, high)
    exists = any((low // limit + 1) * limit - 1 >= high for limit in range(width + 1, 251))
    assert (placed is not None) == exists
    if placed is not None:
        number, limit = placed
        assert 1 <= limit <= 250
        assert (number - 1) * limit <= low
        assert high <= number * limit - 1


def test_no_page_holds_more_than_250_positions() -> None:
    assert page_holding(0, 250) is None
    assert page_holding(0, 249) == (1, 250)


def test_a_second_across_a_boundary_is_recorded_with_its_positions() -> None:
    ties = WalkTies()
    ties.page(1, 4, _items([9, 8, 7, 7]))
    ties.page(2, 4, _items([7, 7, 7, 7]))  # the whole page in the tie
    ties.page(3, 4, _items([7, 6, 5, 5]))
    ties.page(4, 4, _items([4, 3, 3, 3]))  # 5 then 4: no tie across this boundary
    assert list(ties.spans) == [7]
    span = ties.spans[7]
    assert (span.first, span.last) == (2, 8)


def test_a_page_boundary_between_two_seconds_records_nothing() -> None:
    ties = WalkTies()
    ties.page(1, 3, _items([9, 9, 8]))
    ties.page(2, 3, _items([7, 7, 6]))
    assert ties.spans == {}
