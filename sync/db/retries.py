"""A running run's retries of amoCRM requests, recorded as they happen, for `amosync status`.

The amoCRM client retries a failed request with back-off (an outage costs a pull ~20 s of
retries before it fails); the run's row would say nothing of it until the run ends. While a run
notes its retries (`noting_retries`), the first retry is written to `sync_state` under
`retrying.<kind>` at once (run id, why, how many so far, since when), later ones at most every
`NOTE_EVERY_S` (a storm of retries from eight workers is a few writes, and a healthy run writes
nothing). The entry is removed when the run ends; `sync.status` shows it beside the run while
the run is `running`.

"Since when" is the database's clock, as every run's times are (`note_retries`: the first
write of a run stamps it, later ones keep it), and the stored count never goes down within a
run: two threads' notes may reach the database out of order, and the one with the lower count
then changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.db.runs import RunStore, delete_state
from sync.db.schema import sync_state
from sync.lines import bound_line
from sync.logs import get_logger

log = get_logger("sync.db.retries")

NOTE_EVERY_S = 5.0
REASON_LIMIT = 200  # characters of the retry's reason kept (its line names the request)


def retrying_key(kind: str) -> str:
    """The `sync_state` key of a running run's retries: `retrying.pull`, `.full`, `.push`."""
    return f"retrying.{kind}"


class RetryNote:
    """Called with a retry's reason (`AmoSession.retry_notes`), from any thread."""

    def __init__(self, engine: Engine, runs: RunStore, run_id: int, kind: str) -> None:
        self._engine = engine
        self._runs = runs
        self._run_id = run_id
        self._key = retrying_key(kind)
        self._lock = threading.Lock()
        self._retries = 0
        self._written_at: float | None = None  # monotonic

    @property
    def noted(self) -> bool:
        return self._written_at is not None

    def __call__(self, reason: str) -> None:
        with self._lock:
            self._retries += 1
            now = time.monotonic()
            if self._written_at is not None and now - self._written_at < NOTE_EVERY_S:
                return
            self._written_at = now
            retries = self._retries
        try:
            with self._engine.begin() as conn:
                note_retries(conn, self._key, self._run_id, retries, reason,
                             schema=self._runs.schema)  # fmt: skip
        except SQLAlchemyError as exc:  # a record for status only: the retry goes on
            log.debug("retry_not_noted", error=str(exc).splitlines()[0] if str(exc) else "")

    def clear(self) -> None:
        """The run ended: its retries are no news (one write, only after a noted retry)."""
        if not self.noted:
            return
        try:
            with self._engine.begin() as conn:
                delete_state(conn, self._key, schema=self._runs.schema)
        except SQLAlchemyError:
            pass  # the next run of the kind has another id: status ignores a stale entry


# the database's clock as `datetime.isoformat(timespec="seconds")` of a UTC time writes it
_SINCE_NOW = sa.func.to_char(sa.func.timezone("UTC", sa.func.now()),
                             'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')  # fmt: skip


def note_retries(
    conn: Connection, key: str, run_id: int, retries: int, reason: str, *, schema: str | None
) -> None:
    """Store that run `run_id` has retried `retries` times, the last for `reason`, under `key`:
    since now (the database's clock) for the run's first note, since its first note after that;
    a note of the run with no more retries than the stored one changes nothing."""
    value = {"run_id": run_id, "retries": retries, "reason": bound_line(reason, REASON_LIMIT)}
    stored = sync_state.c.value
    statement = insert(sync_state).values(
        key=key, value=_with_since(sa.literal(value, JSONB), _SINCE_NOW), updated_at=sa.func.now()
    )
    same_run = stored["run_id"].as_integer().is_not_distinct_from(run_id)
    statement = statement.on_conflict_do_update(
        index_elements=[sync_state.c.key],
        set_={
            "value": sa.case(
                (
                    same_run,
                    _with_since(
                        statement.excluded.value,
                        sa.func.coalesce(stored["since"].as_string(), _SINCE_NOW),
                    ),
                ),
                else_=statement.excluded.value,
            ),
            "updated_at": sa.func.now(),
        },
        where=sa.or_(~same_run, sa.func.coalesce(stored["retries"].as_integer(), 0) < retries),
    )
    options = {} if schema is None else {"schema_translate_map": {None: schema}}
    conn.execute(statement, execution_options=options)


def _with_since(
    value: sa.ColumnElement[object], since: sa.ColumnElement[object]
) -> sa.ColumnElement[object]:
    """The JSON object `value` with its `since` set to `since` (text)."""
    return value.op("||", return_type=JSONB)(
        sa.func.jsonb_build_object(sa.literal_column("'since'"), since)
    )


@contextmanager
def noting_retries(
    notes: list[Callable[[str], None]], engine: Engine, runs: RunStore, run_id: int, kind: str
) -> Iterator[RetryNote]:
    """Within the block, the session's retries (`notes`: `AmoSession.retry_notes`) are noted
    for the run `run_id` of `kind`."""
    note = RetryNote(engine, runs, run_id, kind)
    notes.append(note)
    try:
        yield note
    finally:
        notes.remove(note)
        note.clear()
