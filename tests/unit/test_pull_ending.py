"""The fetch stage's choices of what takes the rate budget's starts, where a start spent on the
wrong request costs the run time (issue 12's rate-bound targets): the walk's last list reads go
before the chat batches, and no window is split beside a second read by id whose end is unknown.
The walk helpers are `tests/unit/test_pull_walk.py`'s (the in-process emulator, no socket)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sync.pull.stage import CHATS_BEHIND, ENDING_PAGES, Tie, Waiting
from sync.pull.windows import Window
from tests.unit.test_pull_walk import PAGE, Stored, amo, fetch_stage


def test_the_walks_last_list_reads_go_before_the_chat_batches() -> None:
    """With 8 pages held for their chat links the batches came to the front and kept the last
    window's page waiting ~1.5 s, the budget idle after it while the final pass waited for that
    page: once the list pages left are known and few, list reads still go first, up to
    `ENDING_PAGES` pages more (memory stays bounded)."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=True)
        turns = client.session.limiter.turns
        places: list[object] = []

        def chats(ids: list[int]) -> list[dict[str, Any]]:
            places.append(turns.enter())  # as the limiter sees the batch's request
            return []

        fetcher._chats = chats  # type: ignore[method-assign]
        with ThreadPoolExecutor(1) as pool:
            fetcher._pool = pool
            fetcher._collect([{"id": 1, "updated_at": 5}], (0, 6))
            fetcher._send_chats()
        page = turns.enter()  # a list read waiting beside it
        fetcher.waiting.extend(Waiting([{"id": i}], None) for i in range(CHATS_BEHIND))
        assert turns.yields(places[0], 0.0, 0.15) == 0  # mid-walk: its turn
        window = fetcher.plan.windows[0]
        window.pos, window.hi, window.rate = 100, 100 + 2 * PAGE, 1.0  # two pages left
        fetcher.top = "done"
        fetcher.ending = fetcher._walk_ending()
        assert fetcher.ending
        assert turns.yields(places[0], 0.0, 0.15) > 0  # the walk ends: the list read first
        fetcher.waiting.extend(Waiting([{"id": i}], None) for i in range(ENDING_PAGES))
        assert turns.yields(places[0], 0.0, 0.15) == 0  # but not past the bound
        turns.leave(page)


def test_the_walk_ends_only_when_what_is_left_is_known_and_few() -> None:
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=True)
        window = fetcher.plan.windows[0]
        assert not fetcher._walk_ending()  # an open window not answered yet: unknown
        window.pos, window.hi, window.rate = 100, 100 + 10 * PAGE, 1.0
        assert not fetcher._walk_ending()  # ten pages left
        window.hi = 100 + ENDING_PAGES * PAGE
        assert fetcher._walk_ending()
        tie = Tie(50, Window(50, 51), known=set())
        fetcher.ties.append(tie)
        assert not fetcher._walk_ending()  # a second read by id whose end is unknown
        tie.last, tie.answered = 3, {1: True, 2: True, 3: False}
        assert fetcher._walk_ending()


def test_no_window_is_split_beside_a_tie_whose_end_is_unknown() -> None:
    """A bulk second read by id keeps the budget busy by itself: the catch-up split the other
    windows whenever no list read waited (the tie between two round trips) and each split
    ended in another part-page, a start the chat batches waiting behind would have used."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=False)
        windows = [Window(100 * n, 100 * n + 50, busy=True, rate=1.0) for n in range(1, 4)]
        fetcher.plan.windows = windows
        assert fetcher._budget_has_room()  # nothing waits for the budget: split
        tie = Tie(50, Window(50, 51), known=set(), speculative=0)
        fetcher.ties.append(tie)
        assert not fetcher._budget_has_room()
        windows[1].busy = windows[2].busy = False
        assert fetcher._budget_has_room()  # fewer than MIN_WINDOWS read beside it: split
        windows[1].busy = windows[2].busy = True
        tie.last = 2
        assert fetcher._budget_has_room()  # its end is known: its pages are few


def test_a_part_full_chat_batch_waits_for_a_list_read_held_by_the_workers_cap() -> None:
    """With every worker taken (chat batches waiting for the budget) and a window waiting to be
    read, no request in flight lists contacts, yet the walk is not draining: the part-full
    batch went out mid-walk and the run asked a chat request more than ⌈contacts/250⌉."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=True)
        sent: list[int] = []
        fetcher._send_chats = lambda: sent.append(fetcher.chat_batched)  # type: ignore[method-assign]
        fetcher.chat_batch, fetcher.chat_batched = [(Waiting([{"id": 1}], None), [1])], 1
        fetcher.inflight = {Future(): lambda _: None for _ in range(fetcher.setup.workers)}
        window = fetcher.plan.windows[0]
        fetcher._drain_chats()
        assert sent == []  # the idle window takes the next free worker
        window.busy = True
        fetcher._drain_chats()
        assert sent == [1]  # nothing left to list but what is in flight: the walk drains
        fetcher.inflight.pop(next(iter(fetcher.inflight)))
        window.busy, sent[:] = False, []
        fetcher._drain_chats()
        assert sent == [1]  # a worker is free: the window would have gone before the drain


def test_after_the_walk_the_chat_batches_go_before_the_final_pass() -> None:
    """Once the walk is over (the final pass sent) the chat batches still waiting for the
    budget take their starts before the final pass's newest page and the deletion check: the
    last start then goes to a read whose answer stores next to nothing, and the pages the
    batches complete are written while it is on its way."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=True)
        turns = client.session.limiter.turns
        seen: dict[str, object] = {}

        def chats(ids: list[int]) -> list[dict[str, Any]]:
            seen["chats"] = turns.enter()  # as the limiter sees the batch's request
            return []

        def last() -> None:
            seen["last"] = turns.enter()  # the final pass, inside its `_last` wrapper

        fetcher._chats = chats  # type: ignore[method-assign]
        with ThreadPoolExecutor(1) as pool:
            fetcher._pool = pool
            fetcher._collect([{"id": 1, "updated_at": 5}], (0, 6))
            fetcher._send_chats()
            pool.submit(fetcher._last(last)).result()
        chats_at, last_at = seen["chats"], seen["last"]
        assert turns.yields(last_at, 0.0, 0.15) == 0  # mid-walk both wait behind: no order
        fetcher.full_tail = True  # the walk is over: the final pass went out
        assert turns.yields(chats_at, 0.0, 0.15) == 0  # the batch takes the start
        assert turns.yields(last_at, 0.0, 0.15) > 0  # the final pass waits behind it
        turns.leave(chats_at)
        assert turns.yields(last_at, 0.0, 0.15) == 0  # nothing else waits: its turn
        turns.leave(last_at)
