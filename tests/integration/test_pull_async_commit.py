"""The pull's page transactions commit without waiting for the WAL flush, and nothing else does;
a writer's connection lost after a commit fails the run instead of claiming pages on a new one
(`sync.pull.sink.Sink.drain`; docs/pull.md, "Issue 12's ingest target (2026-12-07, night)")."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from sync.config import AmoCrmConfig, Config, DatabaseConfig, Secret
from sync.db.engine import create_engine, sync_origin
from sync.db.runs import CONTACTS_CURSOR, RunStore, pull_lock_key
from sync.errors import LockLostError
from sync.pull import run_pull
from sync.pull.sink import CompletePage, CursorKeeper, CursorState, Sink, end_marker
from sync.pull.windows import Coverage
from tests.integration.lock_helpers import terminate_lock_holder
from tests.integration.pull_helpers import emulated, make_config, pull
from tests.integration.push_env import push_env

# every statement writing `contacts` notes its transaction's synchronous_commit
RECORD_MODES = """
CREATE TABLE public.commit_modes (mode text);
CREATE FUNCTION public.note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.commit_modes VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
CREATE TRIGGER note_commit_mode AFTER INSERT OR UPDATE ON amocrm.contacts
    FOR EACH STATEMENT EXECUTE FUNCTION public.note_commit_mode();
"""


def modes(engine: Engine) -> list[str]:
    with engine.begin() as conn:
        found = list(conn.scalars(sa.text("DELETE FROM public.commit_modes RETURNING mode")))
    return found


def test_only_the_pulls_page_transactions_commit_asynchronously(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=15) as env:
        with engine.begin() as conn:
            conn.execute(sa.text(RECORD_MODES))
        run_pull(env.config, env.engine, env.client, full=True)
        pulled = modes(engine)
        assert pulled
        assert set(pulled) == {"off"}
        contact_id = sorted(env.emulator.account.contacts)[0]
        env.sql("UPDATE contacts SET name = 'local edit' WHERE id = :id", id=contact_id)
        modes(engine)  # the edit's own
        assert env.push().updated == 1
        pushed = modes(engine)
        assert pushed
        assert set(pushed) == {"on"}


def page(contact_id: int, covers: tuple[int, int]) -> CompletePage:
    """A page of one contact, the newest of the span it covers."""
    item = {"id": contact_id, "name": "Ann", "updated_at": covers[1] - 1}
    return CompletePage([item], {}, covers=covers)


class Draining:
    """`Sink.drain` with one writer on a thread of its own, fed page by page."""

    def __init__(self, db_config: DatabaseConfig) -> None:
        self.engine = create_engine(db_config)
        config = Config(
            amocrm=AmoCrmConfig(base_url="http://127.0.0.1:9", access_token=Secret("t")),
            database=db_config,
        )
        coverage = Coverage([(0, 1000)])
        self.keeper = CursorKeeper(RunStore("amocrm"), coverage, CursorState(), 10_000)
        self.sink = Sink(config, self.engine, self.keeper, None)
        self.pages: queue.Queue[Any] = queue.Queue()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            self.sink.drain(self.pages, 1, threading.Event())
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error.append(exc)

    def store(self, contact_id: int, covers: tuple[int, int]) -> None:
        """Hand a page over and wait until it is committed."""
        stored = self.sink.fetched + 1
        self.pages.put(self.keeper.stamp(page(contact_id, covers)))
        deadline = time.monotonic() + 30
        while self.sink.fetched < stored and not self.error:
            assert time.monotonic() < deadline, "the page was not stored"
            time.sleep(0.01)

    def end(self) -> list[BaseException]:
        self.pages.put(end_marker())
        self.thread.join(30)
        return self.error

    def cursor(self) -> Any:
        with self.engine.connect() as conn:
            return RunStore("amocrm").get_state(conn, CONTACTS_CURSOR)


def end_every_other_session(engine: Engine) -> None:
    """What a PostgreSQL crash does to the sessions (and then to commits not flushed yet)."""
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


@pytest.mark.parametrize("more", [True, False], ids=["a page follows", "the end follows"])
def test_a_writers_session_ended_after_a_commit_fails_the_drain(
    db_config: DatabaseConfig, engine: Engine, more: bool
) -> None:
    """A page committed without the flush may be gone after a crash: the writer must not go
    on (a new session would claim that page in its cursor state), nor the drain end as if
    every page were on disk (the run would store its final cursor)."""
    drain = Draining(db_config)
    try:
        drain.store(1, (0, 300))
        assert drain.cursor()["updated_at"] == 300
        end_every_other_session(engine)
        if more:
            drain.pages.put(drain.keeper.stamp(page(2, (300, 600))))
        errors = drain.end()
        assert len(errors) == 1
        assert isinstance(errors[0], DBAPIError)
        assert drain.cursor()["updated_at"] == 300
        assert drain.sink.fetched == 1
    finally:
        drain.engine.dispose()


def test_a_drain_ends_with_its_pages_flushed(db_config: DatabaseConfig) -> None:
    drain = Draining(db_config)
    try:
        drain.store(1, (0, 300))
        drain.store(2, (300, 1000))
        assert drain.end() == []
        assert drain.cursor()["updated_at"] == 1000
    finally:
        drain.engine.dispose()


def test_a_full_resync_whose_lock_session_ended_tombstones_nothing(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's lock session ending while pages are stored (a crash ends it too, and may
    take unflushed pages with it) stops the run right after the drain: not after its
    tombstones, built on the pages' seen ids, and its final cursor."""
    gone = 999_999_999  # stored live, no longer in amoCRM: a resync that ends tombstones it
    with engine.begin() as conn:
        sync_origin(conn)
        conn.execute(sa.text(f"INSERT INTO amocrm.contacts (id, name) VALUES ({gone}, 'Old')"))
    real = Sink.store
    cut: list[int] = []
    once = threading.Lock()

    def store(self: Sink, *args: Any, **kw: Any) -> None:
        with once:
            if not cut:
                cut.append(terminate_lock_holder(engine, pull_lock_key("amocrm")))
        real(self, *args, **kw)

    monkeypatch.setattr(Sink, "store", store)
    with emulated(contacts=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with pytest.raises(LockLostError):
            pull(config, engine, emulator, full=True)
    assert cut == [1]
    with engine.connect() as conn:
        deleted = conn.scalar(sa.text(f"SELECT is_deleted FROM amocrm.contacts WHERE id = {gone}"))
    assert deleted is False


def test_a_drain_that_cannot_connect_takes_the_waiting_pages_and_fails() -> None:
    """The writers' connections are opened before any page: when that fails, the pages still
    waiting are taken until the end marker (the producer's blocking put of it must return)."""
    db = DatabaseConfig(url=Secret("postgresql://postgres@127.0.0.1:9/none"), schema="amocrm")
    engine = create_engine(db)
    config = Config(
        amocrm=AmoCrmConfig(base_url="http://127.0.0.1:9", access_token=Secret("t")), database=db
    )
    keeper = CursorKeeper(RunStore("amocrm"), Coverage([(0, 1000)]), CursorState(), 10_000)
    sink = Sink(config, engine, keeper, None)
    pages: queue.Queue[Any] = queue.Queue(maxsize=2)
    pages.put(keeper.stamp(page(1, (0, 300))))
    pages.put(keeper.stamp(page(2, (300, 600))))
    error: list[BaseException] = []

    def drain() -> None:
        try:
            sink.drain(pages, 2, threading.Event())
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            error.append(exc)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    pages.put(end_marker(), timeout=30)
    thread.join(30)
    assert not thread.is_alive()
    assert len(error) == 1
    assert isinstance(error[0], DBAPIError)
    assert sink.fetched == 0
    engine.dispose()
