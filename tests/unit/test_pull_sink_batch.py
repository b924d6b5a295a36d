"""A writer merges the pages waiting behind the one it took (`sync.pull.sink._batch`): up to
`BATCH` in one transaction, exactly as if stored one after the other, or not at all."""

from __future__ import annotations

import queue
from typing import Any

from sync.pull.sink import BATCH, ChatLinks, CompletePage, _batch, end_marker

FIELDS: dict[int, Any] = {}


def page(seq: int, *ids: int, chats: bool = True) -> CompletePage:
    links = ChatLinks(list(ids), [{"id": i, "contact_id": i, "chat_id": f"c{i}"} for i in ids])
    items = [{"id": i, "updated_at": 100} for i in ids]
    return CompletePage(items, FIELDS, links if chats else None, seq=seq)


def waiting(*pages: Any) -> queue.Queue[Any]:
    q: queue.Queue[Any] = queue.Queue()
    for p in pages:
        q.put(p)
    return q


def test_three_pages_waiting_become_one_transaction_claiming_all_three() -> None:
    assert BATCH == 3
    q = waiting(page(2, 3, 4), page(3, 5))
    merged, after = _batch(page(1, 1, 2), q)
    assert after is None
    assert q.empty()
    assert [i["id"] for i in merged.items] == [1, 2, 3, 4, 5]
    assert (merged.seq, merged.also) == (1, (2, 3))
    assert merged.chats is not None
    assert merged.chats.ids == [1, 2, 3, 4, 5]
    assert [r["contact_id"] for r in merged.chats.rows] == [1, 2, 3, 4, 5]


def test_no_more_than_batch_pages_are_taken() -> None:
    fourth = page(4, 7)
    q = waiting(page(2, 3), page(3, 5), fourth)
    merged, after = _batch(page(1, 1), q)
    assert (merged.seq, merged.also, after) == (1, (2, 3), None)
    assert q.get_nowait() is fourth  # left for the next turn


def test_a_page_sharing_a_contact_ends_the_merge_and_is_stored_next() -> None:
    clash = page(3, 2)  # contact 2 is in the first page: its rows would be written twice
    q = waiting(page(2, 3), clash)
    merged, after = _batch(page(1, 1, 2), q)
    assert (merged.also, after) == ((2,), clash)


def test_the_end_marker_stays_for_the_other_writers() -> None:
    q = waiting(page(2, 3), end_marker())
    merged, after = _batch(page(1, 1), q)
    assert (merged.also, after) == ((2,), None)
    assert q.get_nowait() is end_marker()
