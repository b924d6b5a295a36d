"""What the steps of one push run share: the run's context and counters, and the way a batched
write is sent (its rejected entities apart) and its outcome recorded (lock waits retried)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from sync.amo.client import AmoClient
from sync.amo.writes import WriteResult
from sync.clock import Clock
from sync.config import Config
from sync.core.cf_shape import ShapeError
from sync.db.lockwait import retrying
from sync.db.runs import RunStore
from sync.errors import AmoError, AmoRejectedError, AmoWriteUnconfirmedError
from sync.logs import get_logger
from sync.push.report import PushReport
from sync.push.written import Written

log = get_logger("sync.push")


# The report's counts that are columns of the run's `sync_runs` row (`pushed` is their sum).
RUN_COLUMNS = {"updated": "pushed", "created": "pushed", "linked": "pushed",
               "conflicts": "conflicts", "errors": "errors"}  # fmt: skip


class Counter:
    """The run's report, added to by the steps (several batches at once); `requests_before`:
    the session's request count when the run began (`requests` counts from there)."""

    def __init__(self, report: PushReport, requests_before: int = 0) -> None:
        self.report = report
        self.requests_before = requests_before
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.report, name, getattr(self.report, name) + value)


@dataclass(frozen=True)
class Context:
    config: Config
    engine: Engine
    client: AmoClient
    clock: Clock
    count: Counter
    runs: RunStore
    unconfirmed: set[int] = field(default_factory=set)  # new contacts amoCRM has not confirmed
    written: Written = field(default_factory=Written)  # read back at the run's end


def invalid_reason(contact_id: int, exc: Exception) -> str:
    """The one-line reason for a row push cannot send (logged without any of its values)."""
    if isinstance(exc, ShapeError):
        reason = f"not sent: {exc}"
    else:
        reason = f"not sent: push could not plan this change ({type(exc).__name__})"
    log.warning("push_row_invalid", contact_id=contact_id, reason=reason)
    return reason


def record_outcome(ctx: Context, work: Callable[[Connection], None], **counts: int) -> None:
    """Record what amoCRM accepted, in one transaction, and add `counts` to the report, to the
    run's row in that same transaction (`count_in`); a lock another session holds (an
    analyst's `SELECT … FOR UPDATE`) delays the record with back-off instead of failing the run."""

    def attempt() -> None:
        with ctx.engine.begin() as conn:
            work(conn)
            count_in(ctx, conn, **counts)

    retrying(attempt, ctx.clock.sleep)
    ctx.count.add(**counts)


def count_in(ctx: Context, conn: Connection, **counts: int) -> None:
    """Add to the run's `sync_runs` row, in the caller's transaction, the counts of what it
    records (and the requests sent so far): the row is true whenever that commits, so a push
    killed with -9 shows what it did, not zeros (`RunStore.add_counts`, as pull's pages do).
    `run_push`'s end sets the final counts."""
    columns: dict[str, int] = {}
    for name, value in counts.items():
        column = RUN_COLUMNS.get(name)
        if column is not None and value:
            columns[column] = columns.get(column, 0) + value
    requests = ctx.client.session.requests_sent - ctx.count.requests_before
    if columns and requests > 0:
        columns["requests"] = requests  # a total: the row keeps the greatest
    if columns:
        ctx.runs.add_counts(conn, ctx.count.report.run_id, columns)


def send(
    ctx: Context,
    write: Callable[[], list[WriteResult]],
) -> tuple[list[WriteResult], Mapping[str, Sequence[Mapping[str, str]]], AmoError | None]:
    """A batched write's results, the entities amoCRM rejected (by request_id), and a failure to
    raise once what did get through is recorded. The session's `write_guard` (set by
    `run_push`) raises `LockLostError` before every attempt when the push lock's session is
    gone (a second push may be sending the same edits)."""
    try:
        return write(), {}, None
    except AmoRejectedError as exc:
        return results(exc), exc.errors_by_request_id, None
    except AmoWriteUnconfirmedError as exc:  # the caller keeps `unconfirmed` in flight
        return results(exc), exc.errors_by_request_id, exc
    except AmoError as exc:
        return results(exc), {}, exc


def gone(ctx: Context, contact_ids: Iterable[int]) -> set[int]:
    """Of the contacts a rejected write named, those amoCRM no longer has (each read by id:
    lists lag). Their rows get `NOT_FOUND`, the error a pull bringing the contact back clears
    (`sync.db.tombstones.FOUND_AGAIN`): amoCRM's own words for it are not ours to parse. A read
    that fails says nothing: amoCRM's message stays."""
    try:
        return {cid for cid in contact_ids if ctx.client.fetch_contact(cid) is None}
    except AmoError:
        return set()


def results(exc: AmoError) -> list[WriteResult]:
    return [r for r in exc.results if isinstance(r, WriteResult)]


def message(errors: Sequence[Mapping[str, str]]) -> str:
    parts = []
    for error in errors:
        path, detail = error.get("path") or "", error.get("detail") or error.get("code") or ""
        parts.append(f"{path}: {detail}" if path else detail)
    return "amoCRM rejected the change: " + "; ".join(parts)
