"""A spurious 204 never ends a range the pull reads (sync/pull/empty.py): amoCRM answers 204 now
and then for a list page that is not empty (amocrm-api.md §2, §11.4), and before this a single
one on a split window, or on the final pass, let `pull --full` exit 0 with thousands of contacts
missing and the cursor past them. Each test answers 204 to one chosen kind of request (real
HTTP, real PostgreSQL), and a seeded run answers 15% of all list requests so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.emulator import Emulator, EmulatorSettings, FaultRule, serve
from sync.emulator.wire import Request, Response
from tests.integration.pull_helpers import assert_converged, make_config, pull

CONTACTS = "/api/v4/contacts"


class Spurious(Emulator):
    """The emulator, answering 204 to the list requests `hit` picks (a spurious 204 on a page
    that is not empty), and remembering the last `updated_at` of every page it listed."""

    def __init__(self, settings: EmulatorSettings) -> None:
        super().__init__(settings)
        self.lock = threading.Lock()
        self.hit: Callable[[Request, dict[str, Any]], bool] = lambda request, query: False
        self.after: Callable[[Request, dict[str, Any]], None] = lambda request, query: None
        self.lasts: set[int] = {0}  # where a window's next page starts (0: the first window)
        self.hits: list[dict[str, Any]] = []

    def _answer(self, request: Request) -> Response:
        query = _list_query(request)
        if query is not None:
            with self.lock:
                if self.hit(request, query):
                    self.hits.append(query)
                    return Response(204)
        response = super()._answer(request)
        if query is not None and response.status == 200:
            items = orjson.loads(response.body)["_embedded"]["contacts"]
            with self.lock:
                self.lasts.add(int(items[-1]["updated_at"]))
            self.after(request, query)
        return response


def _list_query(request: Request) -> dict[str, Any] | None:
    if request.method != "GET" or request.path.rstrip("/") != CONTACTS:
        return None
    query = request.query
    order = query.get("order") or {}
    bound = (query.get("filter") or {}).get("updated_at") or {}
    return {
        "order": next(iter(order.items()), None) if isinstance(order, dict) else None,
        "from": int(bound["from"]) if "from" in bound else None,
        "to": int(bound["to"]) if "to" in bound else None,
        "page": int(query.get("page") or 1),
    }


@contextmanager
def spurious(**settings: Any) -> Iterator[tuple[Spurious, str]]:
    values: dict[str, Any] = {"contacts": 1500, "seed": 5, "rate_limit": None}
    values.update(settings)
    emulator = Spurious(EmulatorSettings(**values))
    with serve(emulator) as server:
        yield emulator, server.base_url


def _walking(query: dict[str, Any]) -> bool:
    return query["order"] == ("updated_at", "asc") and query["page"] == 1


def test_a_204_on_a_split_window_is_not_believed(db_config: DatabaseConfig, engine: Engine) -> None:
    with spurious(latency_ms=20, jitter_ms=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)

        def split_window(request: Request, query: dict[str, Any]) -> bool:
            # a window's first page that no page before it ends at: the far half of a split
            fresh = query["from"] is not None and query["from"] not in emulator.lasts
            return not emulator.hits and _walking(query) and query["to"] is not None and fresh

        emulator.hit = split_window
        pull(config, engine, emulator, full=True)
        assert emulator.hits, "no window was split"
        assert_converged(engine, emulator)


def test_a_204_on_the_final_pass_is_not_believed(db_config: DatabaseConfig, engine: Engine) -> None:
    """Contacts edited after the newest page was read and before their window was: only the
    final pass lists them (their old second is empty when their window reads it). The final
    pass asks the newest page first (it would list them all); a 204 there sends the keyset
    read, and a 204 on that is probed too."""
    with spurious(latency_ms=20, jitter_ms=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        edited: list[int] = []
        recent = emulator.clock.now_s() - 60

        def edit_after_the_top(request: Request, query: dict[str, Any]) -> None:
            if query["order"] == ("updated_at", "desc") and query["from"] is None and not edited:
                with emulator.account.lock:
                    live = [c for c in emulator.account.contacts.values() if not c.is_deleted]
                    live.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
                    edited.extend(c.id for c in live[60:80])  # below the newest page
                emulator.update_contacts([{"id": i, "last_name": "Edited"} for i in edited])

        def final_pass(request: Request, query: dict[str, Any]) -> bool:
            newest = query["order"] == ("updated_at", "desc") and query["from"] is None
            if newest and edited and not emulator.hits:  # the final pass's newest page
                return True
            late = query["from"] is not None and query["from"] >= recent and query["to"] is None
            return len(emulator.hits) == 1 and _walking(query) and late

        emulator.after, emulator.hit = edit_after_the_top, final_pass
        pull(config, engine, emulator, full=True)
        assert edited
        assert len(emulator.hits) == 2, "no keyset final pass was asked"
        assert_converged(engine, emulator)


def test_two_204s_on_the_first_window_are_not_believed(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with spurious(contacts=400) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)

        def first_window(request: Request, query: dict[str, Any]) -> bool:
            return len(emulator.hits) < 2 and _walking(query) and query["from"] == 0

        emulator.hit = first_window
        pull(config, engine, emulator, full=True)
        assert len(emulator.hits) == 2
        assert_converged(engine, emulator)


def test_the_cli_pull_after_two_204s_on_its_window_misses_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with spurious(contacts=400) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        emulator.touch_contacts(count=120)
        emulator.clock.advance(5)
        emulator.hit = lambda request, query: len(emulator.hits) < 2 and _walking(query)
        pull(config, engine, emulator, final_pass=True)
        assert len(emulator.hits) == 2
        assert_converged(engine, emulator)


def test_random_204s_on_every_list_page_lose_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The audit's repro, scaled down: 15% of all contacts list requests answer 204."""
    with spurious(contacts=3000, seed=7, latency_ms=10, jitter_ms=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)
        emulator.add_fault(FaultRule(kind="empty_page", path=CONTACTS, times=None, rate=0.15))
        pull(config, engine, emulator, full=True)
        assert_converged(engine, emulator)
        emulator.clock.advance(30)
        emulator.touch_contacts(count=400)
        emulator.clock.advance(5)
        pull(config, engine, emulator, final_pass=True)
        assert_converged(engine, emulator)
        spurious_204s = [r for r in emulator.requests() if r["fault"] == "empty_page"]
        assert len(spurious_204s) > 10


def test_filters_off_a_204_on_page_1_of_the_resync_by_id_is_asked_again(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """An account whose filters amoCRM ignores is read by `order[id]`; its page 1 answers 204
    only when the account has no contact (before: a fresh table stayed empty, exit 0)."""
    with spurious(contacts=300, api_filter_enabled=False) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=50)

        def first_page(request: Request, query: dict[str, Any]) -> bool:
            return len(emulator.hits) < 2 and query["page"] == 1 and query["order"] == ("id", "asc")

        emulator.hit = first_page
        report = pull(config, engine, emulator, full=True)
        assert report.mode == "full-by-id"
        assert_converged(engine, emulator)
        assert len(emulator.hits) == 2


def test_a_204_while_a_shaken_tie_is_read_again_is_not_believed(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """A second read by id shifts under edits (drift), so it is read again page by page
    (`tail._verify`); a spurious 204 on a page of that re-read, one that answered contacts
    the first time, must not drop the page."""
    with spurious(contacts=500, trashed_fraction=0.0, clock_start=time.time() - 600) as (
        emulator,
        url,
    ):
        config = make_config(db_config, url, emulator.long_lived_token, page_size=25)
        pull(config, engine, emulator)
        emulator.clock.advance(30)
        live = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
        emulator.update_contacts([{"id": i, "last_name": "Tie"} for i in live[:200]])
        emulator.clock.advance(2)
        answered: set[tuple[Any, ...]] = set()

        def by_id(query: dict[str, Any]) -> tuple[Any, ...] | None:
            if query["order"] != ("id", "asc"):
                return None
            return (query["from"], query["to"], query["page"])

        def remember(request: Request, query: dict[str, Any]) -> None:
            key = by_id(query)
            if key is not None:
                answered.add(key)

        def re_read(request: Request, query: dict[str, Any]) -> bool:
            key = by_id(query)  # each page of the re-read, once
            return key in answered and not any(by_id(h) == key for h in emulator.hits)

        emulator.after, emulator.hit = remember, re_read
        rule = FaultRule(kind="drift", path=CONTACTS, min_page=2, times=3, touch=2)
        emulator.add_fault(rule)
        with capture_logs() as logs:
            pull(config, engine, emulator)
        assert "pull_tie_reverified" in [e["event"] for e in logs]
        assert emulator.hits, "no page was read again"
        assert_converged(engine, emulator)
