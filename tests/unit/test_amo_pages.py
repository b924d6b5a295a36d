"""Pagination rules on a scripted list endpoint (a fake fetch function, no sockets)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sync.amo.pages import iter_pages
from sync.amo.session import Reply
from sync.errors import InvariantError

PATH = "/api/v4/contacts"


def page(number: int, ids: list[int], *, last: bool = False, next_page: int | None = None) -> Reply:
    links: dict[str, Any] = {"self": {"href": f"http://h{PATH}?page={number}"}}
    if not last:
        links["next"] = {"href": f"http://h{PATH}?page={next_page or number + 1}"}
    data = {"_page": number, "_links": links, "_embedded": {"contacts": [{"id": i} for i in ids]}}
    return Reply(200, data, {})


EMPTY = Reply(204, None, {})


class Endpoint:
    """Answers page N from a dict of lists of replies (consumed in order; the last one sticks)."""

    def __init__(self, answers: dict[int, list[Reply]]) -> None:
        self.answers = answers
        self.calls: list[Mapping[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, params: Mapping[str, Any]) -> Reply:
        with self.lock:
            self.calls.append(dict(params))
            queue = self.answers.get(int(params["page"]), [EMPTY])
            return queue.pop(0) if len(queue) > 1 else queue[0]


def ids(pages: list[Any]) -> list[list[int]]:
    return [[c["id"] for c in p.items] for p in pages]


def test_pages_until_no_next_link() -> None:
    fetch = Endpoint({1: [page(1, [1, 2])], 2: [page(2, [3, 4])], 3: [page(3, [5], last=True)]})
    pages = list(iter_pages(fetch, PATH, "contacts", {"filter": {"x": 1}}, limit=2))
    assert ids(pages) == [[1, 2], [3, 4], [5]]
    assert [p.has_next for p in pages] == [True, True, False]
    assert fetch.calls[0] == {"filter": {"x": 1}, "page": 1, "limit": 2}
    assert len(fetch.calls) == 3


def test_204_on_the_first_page_means_empty() -> None:
    fetch = Endpoint({1: [EMPTY]})
    assert list(iter_pages(fetch, PATH, "contacts")) == []
    assert len(fetch.calls) == 1


def test_spurious_204_mid_scan_is_reread_once() -> None:
    fetch = Endpoint({1: [page(1, [1])], 2: [EMPTY, page(2, [2], last=True)]})
    assert ids(list(iter_pages(fetch, PATH, "contacts"))) == [[1], [2]]
    assert [c["page"] for c in fetch.calls] == [1, 2, 2]


def test_204_twice_mid_scan_is_believed() -> None:
    fetch = Endpoint({1: [page(1, [1])], 2: [EMPTY]})
    assert ids(list(iter_pages(fetch, PATH, "contacts"))) == [[1]]
    assert [c["page"] for c in fetch.calls] == [1, 2, 2]


def test_repeated_next_link_is_an_invariant_error() -> None:
    fetch = Endpoint({1: [page(1, [1], next_page=2)], 2: [page(2, [2], next_page=2)]})
    with pytest.raises(InvariantError, match="next link"):
        list(iter_pages(fetch, PATH, "contacts"))


def test_repeated_page_number_is_an_invariant_error() -> None:
    fetch = Endpoint({1: [page(1, [1])], 2: [page(1, [2], next_page=3)]})
    with pytest.raises(InvariantError, match="page 1 repeated"):
        list(iter_pages(fetch, PATH, "contacts"))


def test_page_repeating_the_previous_ids_is_an_invariant_error() -> None:
    same = {"_links": {"next": {"href": "x"}}, "_embedded": {"contacts": [{"id": 1}]}}
    other = {"_links": {"next": {"href": "y"}}, "_embedded": {"contacts": [{"id": 1}]}}
    fetch = Endpoint({1: [Reply(200, same, {})], 2: [Reply(200, other, {})]})
    with pytest.raises(InvariantError, match="repeats the previous page"):
        list(iter_pages(fetch, PATH, "contacts"))


def test_wrong_shape_is_an_invariant_error() -> None:
    fetch = Endpoint({1: [Reply(200, {"_embedded": {"contacts": {"id": 1}}}, {})]})
    with pytest.raises(InvariantError, match="not a list"):
        list(iter_pages(fetch, PATH, "contacts"))


def test_limit_is_bounded() -> None:
    with pytest.raises(ValueError, match="limit"):
        list(iter_pages(Endpoint({}), PATH, "contacts", limit=251))


def test_prefetch_yields_in_order_and_stops_at_the_end() -> None:
    answers = {n: [page(n, [n])] for n in range(1, 10)}
    answers[10] = [page(10, [10], last=True)]
    fetch = Endpoint(answers)
    with ThreadPoolExecutor(3) as pool:
        pages = list(iter_pages(fetch, PATH, "contacts", prefetch=3, pool=pool))
    assert ids(pages) == [[n] for n in range(1, 11)]
    assert len(fetch.calls) <= 12  # at most depth-1 speculative requests past the end


def test_stopping_early_leaves_nothing_running() -> None:
    fetch = Endpoint({n: [page(n, [n])] for n in range(1, 50)})
    with ThreadPoolExecutor(3) as pool:
        for p in iter_pages(fetch, PATH, "contacts", prefetch=3, pool=pool):
            if p.number == 2:
                break
    assert len(fetch.calls) <= 5
