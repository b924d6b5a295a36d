"""The exception tree, sorted by what the caller must do.

    SyncError                     base of every error the product raises on purpose
    ├── ConfigError               configuration is wrong: every problem listed; exit 2
    ├── UsageError                a command was called wrongly; exit 2
    ├── AmoError                  amoCRM answered badly (method, redacted URL, status, excerpt)
    │   ├── AmoTransientError     timeout, network, 429, 5xx: back off and retry
    │   │   └── AmoWriteUnknownError  a write's response was lost: it may have been applied
    │   ├── AmoAuthError          token missing, refresh failed or revoked: stop jobs, report
    │   ├── AmoBlockedError       403 HTML page: the IP is blocked; stop everything
    │   ├── AmoPaymentError       402: the account is not paid
    │   └── AmoRejectedError      400 for records: mark those rows, carry on with the rest
    ├── StoreError                PostgreSQL failed (wraps SQLAlchemy/psycopg errors)
    │   ├── SchemaMissingError    the schema is not migrated (to this version): run `db upgrade`
    │   ├── LockWaitError         a statement gave up waiting for a lock another session holds
    │   ├── EmbeddedDatabaseError the embedded PostgreSQL could not be started
    │   └── DiskFullError         PostgreSQL (53100) or this process (ENOSPC) ran out of disk
    ├── LockLostError             a run's advisory lock session ended: stop before the next write
    ├── StoppedError              SIGTERM/SIGINT stopped a one-shot command (`sync.cli_stop`)
    └── InvariantError            cursor going backwards, pagination loop, corrupt state

Driver errors are wrapped only at the two boundaries (HTTP in `sync.amo`, SQL in `sync.db`)
with `raise ... from exc`. Conflicts are values, not exceptions.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sync.lines import LINE_LIMIT, bound_line, cut_url


class SyncError(Exception):
    """Base of every error raised on purpose; its message is one clear line for a person."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration: which key, where its value came from, what."""

    key: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.key} ({self.source}): {self.message}"


class ConfigError(SyncError):
    """The configuration is invalid; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid configuration ({count} {noun}):\n{lines}")


class UsageError(SyncError):
    """A command was called with arguments that cannot work."""

    exit_code = 2


class AmoError(SyncError):
    """amoCRM answered with an error; the URL is stored without query secrets.

    Its message is one line of at most `AMO_MESSAGE_LIMIT` characters: the reason, then the
    method, the URL cut to its path and first parameters, and the status (`no answer` when
    none came). `url` keeps the whole URL, for debug logging only.

    A write call (create/update/link) that fails part-way sets `results` to the results of the
    entities that did go through before the failure, so the caller can record them (for creates
    this is what prevents duplicates on the next attempt).
    """

    results: tuple[object, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        body_excerpt: str = "",
    ) -> None:
        self.reason = message
        self.method = method
        self.url = url
        self.status = status
        self.body_excerpt = body_excerpt
        super().__init__(amo_message(message, method, url, status))


# an AmoError's message fits one line with the CLI's "amosync: " or a log line's key before it
AMO_MESSAGE_LIMIT = LINE_LIMIT - 20


def amo_message(reason: str, method: str, url: str, status: int | None) -> str:
    """`reason (GET /api/v4/contacts?page=2 -> 503)`, bounded to `AMO_MESSAGE_LIMIT`."""
    if not method:
        return bound_line(reason, AMO_MESSAGE_LIMIT)
    answer = "no answer" if status is None else f"-> {status}"
    where = f" ({method} {cut_url(url)} {answer})"
    return bound_line(reason, AMO_MESSAGE_LIMIT - len(where)) + where


class AmoTransientError(AmoError):
    """A failure worth retrying after a pause: timeout, network, 429, 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class AmoWriteUnknownError(AmoTransientError):
    """A write was sent but its response was lost (timeout, reset, 5xx, 504, broken body).

    amoCRM may or may not have applied it: re-read before retrying, never resend blindly.
    """


class AmoWriteUnconfirmedError(AmoWriteUnknownError):
    """Creates amoCRM's answer left out that cannot be looked up (it ignores `order[id]`): they
    may exist, so they are not resent; `unconfirmed` lists their request_ids, `held` those
    whose answer was lost that a lagging list may still hide (looked for again later, resent
    only after a bound), `errors_by_request_id` the entities amoCRM rejected meanwhile."""

    def __init__(
        self,
        message: str,
        *,
        unconfirmed: Sequence[str],
        held: Sequence[str] = (),
        errors_by_request_id: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
        results: Sequence[object] = (),
    ) -> None:
        self.unconfirmed = tuple(unconfirmed)
        self.held = tuple(held)
        self.errors_by_request_id = dict(errors_by_request_id or {})
        self.results = tuple(results)
        super().__init__(message)


class AmoStoppedError(AmoError):
    """The process is stopping (SIGTERM, Ctrl-C): a request that was waiting for its start or
    for a pause to end was given up unsent."""


class StoppedError(SyncError):
    """SIGTERM or SIGINT stopped a one-shot command before its work was done (`sync.cli_stop`);
    the message begins `stopped by SIGTERM`."""


class AmoAuthError(AmoError):
    """Authentication failed for good: no token, refresh refused, token revoked."""


class AmoBlockedError(AmoError):
    """amoCRM blocked this IP (403 HTML page); only its support can lift it."""


class AmoPaymentError(AmoError):
    """The amoCRM account is not paid (402)."""


class AmoRejectedError(AmoError):
    """amoCRM rejected a write (400); `errors_by_request_id` maps entities to their errors."""

    def __init__(
        self,
        message: str,
        *,
        errors_by_request_id: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
        results: Sequence[object] = (),
        **kw: object,
    ) -> None:
        self.errors_by_request_id = dict(errors_by_request_id or {})
        self.results = tuple(results)
        super().__init__(message, **kw)  # type: ignore[arg-type]


class StoreError(SyncError):
    """PostgreSQL failed; `transient` tells whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class SchemaMissingError(StoreError):
    """The configured schema has no sync tables yet, or an older revision of them: the command
    says to run `amosync db upgrade` first."""


class LockWaitError(StoreError):
    """A statement of the sync gave up waiting for a lock another session holds (transient);
    the message names the holder: `waiting for a lock on amocrm.contacts held by pid 1234 (…)`."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message, transient=True)


class EmbeddedDatabaseError(StoreError):
    """The embedded PostgreSQL under ./.amosync could not be started."""


class DiskFullError(StoreError):
    """No space left on a disk: free some; retrying before that cannot help."""


class LockLostError(SyncError):
    """The session that held a run's advisory lock is gone (an administrator, a pooler or a
    failover ended it): another run may hold the lock now, so this one must not write again."""

    def __init__(self, lock: str, consequence: str) -> None:
        self.lock = lock
        super().__init__(
            f"the {lock} lock's database session ended (terminated by an administrator, a pooler "
            f"or a failover); {consequence}"
        )


class InvariantError(SyncError):
    """Something that must never happen did: stop loudly rather than corrupt data."""


DISK_FULL_SQLSTATE = "53100"


def disk_full(exc: BaseException) -> str | None:
    """ "disk full: …" when `exc` or one of its causes is PostgreSQL's `disk_full` (SQLSTATE
    53100) or an `OSError` ENOSPC of this process; None otherwise. Duck-typed on `sqlstate`, so
    the ground floor needs no driver."""
    for error in _chain(exc):
        if isinstance(error, DiskFullError):
            return str(error)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            where = f": {error.filename}" if error.filename else ""
            return f"disk full: {error.strerror or 'no space left on device'}{where}"
        if getattr(error, "sqlstate", None) == DISK_FULL_SQLSTATE:
            return f"disk full: PostgreSQL could not write: {_primary(error)}"
    return None


def stopping(exc: BaseException) -> bool:
    """Whether `exc` is (or was caused by) the process being asked to stop: SIGTERM/SIGINT to
    the daemon (`AmoStoppedError`), Ctrl-C, a forced exit. What it cut short was not done, nor
    did it fail: a request it served is put back in the queue."""
    stops = (AmoStoppedError, KeyboardInterrupt, SystemExit)
    return any(isinstance(error, stops) for error in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy's wrapper of a driver error
        if isinstance(orig, BaseException) and id(orig) not in seen:
            seen.add(id(orig))
            yield orig
        current = current.__cause__ or current.__context__


def _primary(error: BaseException) -> str:
    primary = getattr(getattr(error, "diag", None), "message_primary", None)
    text = primary or str(error) or type(error).__name__
    return text.strip().splitlines()[0]


_LOGGED = "_amosync_logged"


def mark_logged(exc: BaseException) -> None:
    """A run logged its own `*_failed` event for `exc`: whoever catches it must not log again
    (even when the run's row could not be marked failed, as in a database outage)."""
    setattr(exc, _LOGGED, True)


def was_logged(exc: BaseException) -> bool:
    return any(getattr(error, _LOGGED, False) for error in _chain(exc))
