"""A writer merges the pages waiting behind the one it took (`sync.pull.sink._batch`): up to
`BATCH` in one transaction, exactly as if stored one after the other, or not at all. The
pages are numbered from 1; `BATCH` of them merge, the next one waits."""

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


def test_the_pages_waiting_become_one_transaction_claiming_them_all() -> None:
    q = waiting(*(page(n, 2 * n - 1, 2 * n) for n in range(2, BATCH + 1)))
    merged, after = _batch(page(1, 1, 2), q)
    assert after is None
    assert q.empty()
    ids = list(range(1, 2 * BATCH + 1))
    assert [i["id"] for i in merged.items] == ids
    assert (merged.seq, merged.also) == (1, tuple(range(2, BATCH + 1)))
    assert merged.chats is not None
    assert merged.chats.ids == ids
    assert [r["contact_id"] for r in merged.chats.rows] == ids


def test_no_more_than_batch_pages_are_taken() -> None:
    beyond = page(BATCH + 1, 100)
    q = waiting(*(page(n, n) for n in range(2, BATCH + 1)), beyond)
    merged, after = _batch(page(1, 1), q)
    assert (merged.seq, merged.also, after) == (1, tuple(range(2, BATCH + 1)), None)
    assert q.get_nowait() is beyond  # left for the next turn


def test_a_page_sharing_a_contact_ends_the_merge_and_is_stored_next() -> None:
    clash = page(2, 2)  # contact 2 is in the first page: its rows would be written twice
    q = waiting(clash, page(3, 3))
    merged, after = _batch(page(1, 1, 2), q)
    assert (merged.also, after) == ((), clash)


def test_pages_with_and_without_chat_links_are_not_merged() -> None:
    plain = page(2, 3, chats=False)
    merged, after = _batch(page(1, 1), waiting(plain))
    assert (merged.also, after) == ((), plain)


def test_the_end_marker_stays_for_the_other_writers() -> None:
    q = waiting(page(2, 3), end_marker())
    merged, after = _batch(page(1, 1), q)
    assert (merged.also, after) == ((2,), None)
    assert q.get_nowait() is end_marker()
