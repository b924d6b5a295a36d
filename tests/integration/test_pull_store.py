"""The page store on its own: versions, echoes and relation diffs, against real PostgreSQL."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import AmoCrmConfig, Config, DatabaseConfig, Secret
from sync.core.mapping import FieldDef, to_rows
from sync.db.contacts import ContactStore, PageResult
from sync.db.engine import create_engine, store_errors, sync_origin
from sync.db.runs import CONTACTS_CURSOR, RunStore
from sync.errors import StoreError
from sync.pull.sink import CompletePage, CursorKeeper, CursorState, Sink, end_marker
from sync.pull.windows import Coverage

RELATIONS = ["custom_values", "tags", "companies", "leads"]


def contact(updated_at: int, tag: str, name: str = "Ann") -> dict[str, Any]:
    return {
        "id": 7,
        "name": name,
        "updated_at": updated_at,
        "custom_fields_values": None,
        "_embedded": {"tags": [{"id": hash(tag) % 1000, "name": tag}], "leads": [{"id": 3}]},
    }


def store(engine: Engine, item: dict[str, Any]) -> PageResult:
    with engine.begin() as conn:
        sync_origin(conn)
        rows = to_rows([item], {}, ("leads",))
        return ContactStore("amocrm").store_page(
            conn, rows, {}, with_relations=RELATIONS, chats=None
        )


def tags(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT tag_name FROM amocrm.contact_tags")))


def test_an_older_version_changes_nothing_not_even_relations(engine: Engine) -> None:
    assert store(engine, contact(200, "new")).upserted == 1
    result = store(engine, contact(100, "old", name="Old"))
    assert result.stale == [7]
    assert result.upserted == 0
    assert tags(engine) == ["new"]


def test_the_same_version_again_writes_nothing(engine: Engine) -> None:
    store(engine, contact(200, "a"))
    with engine.connect() as conn:
        before = conn.scalar(sa.text("SELECT xmin::text FROM amocrm.contact_tags"))
    assert store(engine, contact(200, "a")).upserted == 0
    with engine.connect() as conn:
        after = conn.scalar(sa.text("SELECT xmin::text FROM amocrm.contact_tags"))
    assert after == before  # the relation row was not rewritten


def test_a_newer_version_replaces_the_relations(engine: Engine) -> None:
    store(engine, contact(200, "a"))
    assert store(engine, contact(300, "b")).upserted == 1
    assert tags(engine) == ["b"]


def stored(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_int_like_values_are_stored_as_numbers_and_names_as_text(engine: Engine) -> None:
    item = contact(200, "a") | {"responsible_user_id": "123", "account_id": 5.0, "name": 42}
    assert store(engine, item).upserted == 1
    row = stored(engine, "SELECT responsible_user_id, account_id, name FROM amocrm.contacts")
    assert row == [(123, 5, "42")]


def test_a_value_that_fits_no_column_fails_the_page_in_one_line(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    item = contact(200, "a") | {"responsible_user_id": "the boss"}
    with pytest.raises(StoreError) as caught, store_errors(db_config):
        store(engine, item)
    assert str(caught.value) == (
        "PostgreSQL refused a statement: a value amoCRM sent does not fit its column in contacts"
    )
    assert stored(engine, "SELECT count(*) FROM amocrm.contacts") == [(0,)]


def test_a_page_of_new_and_known_contacts_diffs_only_the_known(engine: Engine) -> None:
    store(engine, contact(200, "old"))
    known = contact(300, "new")
    fresh = contact(300, "first") | {"id": 8}
    with engine.begin() as conn:
        sync_origin(conn)
        rows = to_rows([known, fresh], {}, ("leads",))
        result = ContactStore("amocrm").store_page(
            conn, rows, {}, with_relations=RELATIONS, chats=None
        )
    assert result.upserted == 2
    tags = stored(engine, "SELECT contact_id, tag_name FROM amocrm.contact_tags ORDER BY 1")
    assert tags == [(7, "new"), (8, "first")]
    leads = stored(engine, "SELECT contact_id, lead_id FROM amocrm.contact_leads ORDER BY 1")
    assert leads == [(7, 3), (8, 3)]


def test_two_pages_in_one_transaction_do_not_see_each_others_rows(engine: Engine) -> None:
    first = contact(300, "one")
    second = contact(300, "two") | {"id": 8}
    with engine.begin() as conn:
        sync_origin(conn)
        for item in (first, second):  # the staging tables are emptied between the two
            rows = to_rows([item], {}, ("leads",))
            ContactStore("amocrm").store_page(conn, rows, {}, with_relations=RELATIONS, chats=None)
    tags = stored(engine, "SELECT contact_id, tag_name FROM amocrm.contact_tags ORDER BY 1")
    assert tags == [(7, "one"), (8, "two")]


def test_a_row_whose_key_stays_and_values_change_is_replaced(engine: Engine) -> None:
    def version(updated_at: int, tag: str, phone: str) -> dict[str, Any]:
        item = contact(updated_at, tag)
        item["_embedded"]["tags"] = [{"id": 5, "name": tag}]  # same key (contact, tag id)
        item["custom_fields_values"] = [{"field_id": 1, "values": [{"value": phone}]}]
        return item

    store(engine, version(200, "old", "+7 1"))
    assert store(engine, version(300, "new", "+7 2")).upserted == 1
    assert stored(engine, "SELECT tag_id, tag_name FROM amocrm.contact_tags") == [(5, "new")]
    values = "SELECT field_id, position, value FROM amocrm.contact_custom_field_values"
    assert stored(engine, values) == [(1, 0, "+7 2")]


def test_the_page_transaction_marks_itself_as_the_sync_s_own_in_its_prepare(
    engine: Engine,
) -> None:
    """No separate `sync_origin` round trip: the staging statement sets the origin, so a page
    stored without it passes the relation tables' guard triggers, and a transaction the caller
    prepared runs no statement of its own for the origin."""
    with engine.begin() as conn:
        rows = to_rows([contact(200, "a")], {}, ("leads",))
        ContactStore("amocrm").store_page(conn, rows, {}, with_relations=RELATIONS, chats=None)
    assert tags(engine) == ["a"]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.begin() as conn:
            store_ = ContactStore("amocrm")
            store_.prepare(conn)
            rows = to_rows([contact(300, "b")], {}, ("leads",))
            store_.store_page(conn, rows, {}, with_relations=RELATIONS, chats=None, prepared=True)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert tags(engine) == ["b"]
    assert sum("DO $stage$" in s for s in statements) == 1
    assert not any("set_config" in s and "DO $stage$" not in s for s in statements)


def test_the_sink_prepares_a_page_with_contacts_and_only_marks_a_span_page(
    db_config: DatabaseConfig,
) -> None:
    """The sink's page transaction: one staging statement (with the origin) for a page of
    contacts; a page that only proves a span read (an idle poll's) creates no staging tables
    in its session, as before the origin moved into that statement."""
    engine = create_engine(db_config, pool_size=1, max_overflow=0)
    config = Config(
        amocrm=AmoCrmConfig(base_url="http://127.0.0.1:9", access_token=Secret("t")),
        database=db_config,
    )
    keeper = CursorKeeper(RunStore("amocrm"), Coverage([(0, None)]), CursorState(), 10_000)
    sink = Sink(config, engine, keeper, None)

    def staged() -> bool:
        with engine.connect() as conn:  # the pool's one connection: the sink's session
            name = "pg_temp.amosync_stage_contacts"
            return conn.scalar(sa.text(f"SELECT to_regclass('{name}') IS NOT NULL")) is True

    sink.store(keeper.stamp(CompletePage([], {}, covers=(0, 100))))
    assert not staged()
    sink.store(keeper.stamp(CompletePage([contact(200, "a")], {}, covers=(100, 300))))
    assert staged()
    assert tags(engine) == ["a"]
    engine.dispose()


def test_the_sink_stores_waiting_pages_in_one_transaction_unless_they_share_a_contact(
    db_config: DatabaseConfig,
) -> None:
    """Pages already waiting go into one transaction (the statements of a page once for
    them), as if stored one after the other, and its cursor state claims them all; a page
    holding a contact of the other is stored on its own, after it."""
    engine = create_engine(db_config, pool_size=1, max_overflow=0)
    config = Config(
        amocrm=AmoCrmConfig(base_url="http://127.0.0.1:9", access_token=Secret("t")),
        database=db_config,
    )
    keeper = CursorKeeper(RunStore("amocrm"), Coverage([(0, 1000)]), CursorState(), 10_000)
    sink = Sink(config, engine, keeper, None)
    pages: queue.Queue[Any] = queue.Queue()
    pages.put(keeper.stamp(CompletePage([contact(200, "a")], {}, covers=(0, 250))))
    pages.put(keeper.stamp(CompletePage([{**contact(250, "b"), "id": 8}], {}, covers=(250, 300))))
    pages.put(keeper.stamp(CompletePage([contact(300, "c")], {}, covers=(300, 1000))))
    pages.put(end_marker())
    commits: list[object] = []
    sa.event.listen(engine, "commit", commits.append)
    sink.drain(pages, 1, threading.Event())
    # pages 1 and 2 together, then page 3 (contact 7 again), then the drain's flush
    assert len(commits) == 3
    assert sink.fetched == 3
    with engine.connect() as conn:
        state = RunStore("amocrm").get_state(conn, "pull.contacts")
        assert state is not None
        assert state["updated_at"] == 301
        stored = conn.execute(
            sa.text(
                "SELECT id, extract(epoch FROM updated_at)::int FROM amocrm.contacts ORDER BY id"
            )
        )
        assert [tuple(r) for r in stored] == [(7, 300), (8, 250)]
    assert sorted(tags(engine)) == ["b", "c"]
    engine.dispose()


def test_a_held_local_edit_naming_a_field_by_code_maps_to_its_id(engine: Engine) -> None:
    """A pending local custom_fields_values may name a field by `field_code` (amoCRM's writes
    accept it): the pull that brings a newer version maps it with the definitions' id, and a
    code nobody knows, or an id no bigint holds, gives no rows (push reports it) instead of
    failing every pull."""
    fields = {1: FieldDef(1, "Position", "POSITION", "text")}

    def put(item: dict[str, Any]) -> None:
        with engine.begin() as conn:
            sync_origin(conn)
            rows = to_rows([item], fields, ("leads",))
            ContactStore("amocrm").store_page(
                conn, rows, fields, with_relations=RELATIONS, chats=None
            )

    item = contact(200, "a")
    item["custom_fields_values"] = [{"field_id": 1, "values": [{"value": "old"}]}]
    put(item)
    local = '[{"field_code": "position", "values": [{"value": "x"}]}, '
    local += '{"field_code": "NOSUCH", "values": [{"value": "y"}]}]'
    update = sa.text("UPDATE amocrm.contacts SET custom_fields_values = CAST(:v AS jsonb)")
    with engine.begin() as conn:  # a local edit (not the sync's own)
        conn.execute(update, {"v": local})
    before_0014 = '{"field_id": 100000000000000000000, "values": [{"value": "z"}]}]'  # > bigint
    with engine.begin() as conn:  # the check refuses it since 0014: written past it
        sync_origin(conn)
        conn.execute(update, {"v": local.removesuffix("]") + ", " + before_0014})
    put(contact(300, "b") | {"custom_fields_values": item["custom_fields_values"]})
    values = "SELECT field_id, field_code, value FROM amocrm.contact_custom_field_values"
    assert stored(engine, values) == [(1, "POSITION", "x")]


def test_a_held_edit_with_a_number_python_cannot_read_does_not_stop_the_pull(
    engine: Engine,
) -> None:
    """jsonb prints 1e5000 as 5001 digits, more than Python's json reads as an int: a held local
    edit stored with one before migration 0014 failed every pull of its page. It is read as a
    float; the pull stores amoCRM's newer version of the other fields and keeps the edit."""
    store(engine, contact(200, "a"))
    huge = '[{"field_id": 1, "values": [{"value": 1e5000}]}]'
    with engine.begin() as conn:  # as a local edit was captured before 0014 (no check to pass)
        sync_origin(conn)
        conn.execute(
            sa.text(
                "UPDATE amocrm.contacts SET custom_fields_values = CAST(:v AS jsonb), "
                "sync_status = 'pending'"
            ),
            {"v": huge},
        )
        conn.execute(
            sa.text(
                "INSERT INTO amocrm.sync_changes (contact_id, kind, new_values) SELECT id, "
                "'update', jsonb_build_object('custom_fields_values', custom_fields_values) "
                "FROM amocrm.contacts"
            )
        )
    assert store(engine, contact(300, "b", name="Bob")).upserted == 1
    row = f"SELECT name, custom_fields_values = '{huge}'::jsonb FROM amocrm.contacts"
    assert stored(engine, row) == [("Bob", True)]


def test_no_state_claims_a_page_another_writer_has_not_committed(db_config: DatabaseConfig) -> None:
    """Writer A claims page 1's state but has not committed; writer B stores page 2 first. B's
    state must not cover page 1: if A then dies (kill -9, a lost connection), the next run would
    resume past page 1 and skip its contacts. Once A commits, the next claim covers both."""
    engine = create_engine(db_config)
    runs = RunStore("amocrm")
    keeper = CursorKeeper(runs, Coverage([(100, None)]), CursorState(100), ceiling=1000)
    first = keeper.stamp(CompletePage([{"id": 1, "updated_at": 150}], {}, covers=(100, 200)))
    second = keeper.stamp(CompletePage([{"id": 2, "updated_at": 250}], {}, covers=(200, 300)))
    third = keeper.stamp(CompletePage([{"id": 3, "updated_at": 350}], {}, covers=(300, 400)))
    assert keeper.claim(first.seq) is not None  # A: claimed, its UPDATE not sent yet
    assert keeper.claim(second.seq) is None  # B: page 1 is not committed: nothing to say
    keeper.committed(second.seq)
    keeper.committed(first.seq)  # A committed after all
    state = keeper.claim(third.seq)
    assert state is not None
    with engine.begin() as conn:
        keeper.store(conn, state)
    with engine.connect() as conn:
        assert runs.get_state(conn, CONTACTS_CURSOR)["updated_at"] == 351  # all three
    engine.dispose()


def test_each_page_adds_its_counts_to_the_run_row_in_its_own_transaction(
    db_config: DatabaseConfig,
) -> None:
    """A run's counters are true whenever a page commits (a kill -9 leaves what was stored,
    tests/e2e/test_pull_kill.py). The counts ride on the statement that stores the cursor
    state, no round trip of their own; a page whose state another writer will claim (here:
    the second page, committed before the first) adds them in one UPDATE; a page of a span
    only adds nothing."""
    engine = create_engine(db_config, pool_size=1, max_overflow=0)
    config = Config(
        amocrm=AmoCrmConfig(base_url="http://127.0.0.1:9", access_token=Secret("t")),
        database=db_config,
    )
    runs = RunStore("amocrm")
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "full")
    keeper = CursorKeeper(runs, Coverage([(0, 1000)]), CursorState(), 10_000)
    sent = iter([4, 3, 9])  # the run's requests so far, as each page asks (never goes back)
    sink = Sink(config, engine, keeper, None, run_id=run_id, requests=lambda: next(sent))
    first = keeper.stamp(CompletePage([contact(200, "a")], {}, covers=(0, 250)))
    second = keeper.stamp(
        CompletePage([{**contact(250, "b"), "id": 8}, {**contact(260, "c"), "id": 9}], {})
    )
    idle = keeper.stamp(CompletePage([], {}, covers=(250, 1000)))
    statements: list[list[str]] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements[-1].append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for page in (second, first, idle):
            statements.append([])
            sink.store(page)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT fetched, upserted, requests FROM amocrm.sync_runs WHERE id = :i"),
            {"i": run_id},
        ).one()
        state = runs.get_state(conn, CONTACTS_CURSOR)
    engine.dispose()
    assert tuple(row) == (3, 3, 4)  # requests: the most any page saw
    assert state is not None
    assert state["updated_at"] == 261  # all three committed: amoCRM's newest + 1

    def counting(page: list[str]) -> list[str]:
        return [s.split(" ", 2)[0] + " " + ("state" if "sync_state" in s else "run")
                for s in page if "sync_runs" in s]  # fmt: skip

    assert counting(statements[0]) == ["UPDATE run"]  # its state is claimed by the first's
    assert counting(statements[1]) == ["WITH state"]  # one statement: counts and state
    assert counting(statements[2]) == []
