"""PHP-style query strings, as amoCRM reads them."""

from __future__ import annotations

import pytest

from sync.emulator.params import comma_values, int_param, ints_of, parse_query, values_of


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("filter[id]=5", ["5"]),
        ("filter[id][]=5&filter[id][]=6", ["5", "6"]),
        ("filter[id][0]=5&filter[id][1]=6", ["5", "6"]),
        ("filter%5Bid%5D%5B%5D=5&filter%5Bid%5D%5B%5D=6", ["5", "6"]),
        ("filter[id]=5&filter[id]=6", ["6"]),  # PHP keeps the last plain value
    ],
)
def test_list_forms(query: str, expected: list[str]) -> None:
    assert values_of(parse_query(query)["filter"]["id"]) == expected


def test_nested_ranges_and_scalars() -> None:
    parsed = parse_query("filter[updated_at][from]=1&filter[updated_at][to]=2&page=3&with=a,b")
    assert parsed["filter"]["updated_at"] == {"from": "1", "to": "2"}
    assert int_param(parsed, "page", 1) == 3
    assert int_param(parsed, "limit", 50) == 50
    assert comma_values(parsed["with"]) == ["a", "b"]


def test_ints_of_rejects_non_integers() -> None:
    assert ints_of("1,2") == [1, 2]
    assert ints_of({"0": "1", "1": "x"}) is None
    assert int_param(parse_query("page=x"), "page", 1) is None


def test_keys_without_a_name_are_dropped() -> None:
    assert parse_query("[x]=1&a=2") == {"a": "2"}
