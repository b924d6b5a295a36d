"""`amosync sync`: one push and one pull (CONTRACT). The pull runs even when the push failed —
amoCRM's changes still come in — unless the failure makes pulling pointless or unsafe: amoCRM
refuses this client for good (a 403 block, a revoked token, an unpaid account), PostgreSQL is
down, not migrated or out of disk, the run's lock session ended, or a stop (SIGTERM, Ctrl-C)
came; then the command stops at once with the push's line. A failed push ends the command with
exit 1 and one line that names it (and the pull's failure, when both failed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sync.db.diag import error_line
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoPaymentError,
    AmoStoppedError,
    ConfigError,
    LockLostError,
    LockWaitError,
    StoppedError,
    StoreError,
    SyncError,
    UsageError,
)

# a push failure after which no pull is tried (see the module docstring)
_FINAL = (
    AmoAuthError, AmoBlockedError, AmoPaymentError, AmoStoppedError, StoppedError,
    ConfigError, UsageError, StoreError, LockLostError,
)  # fmt: skip


def pull_after(exc: Exception) -> bool:
    """Whether the pull still runs after the push failed with `exc`. Another process holding
    the push lock (`LockWaitError`) says nothing against pulling; a driver error that escaped
    the data layer is a database failure like `StoreError`."""
    if isinstance(exc, LockWaitError):
        return True
    return not isinstance(exc, _FINAL) and type(exc).__module__.split(".")[0] != "sqlalchemy"


def push_then_pull(
    push: Callable[[], Any], pull: Callable[[], Any], stopping: Callable[[], bool]
) -> None:
    """Run `push`, then `pull` (each returns a report with `describe()`), as described above."""
    failed: Exception | None = None
    try:
        click.echo(push().describe())
    except Exception as exc:
        if stopping() or not pull_after(exc):
            raise
        failed = exc
    try:
        click.echo(pull().describe())
    except Exception as exc:
        if failed is None:
            raise
        both = f"push failed: {error_line(failed)}; pull failed: {error_line(exc)}"
        raise SyncError(both) from exc
    if failed is not None:
        raise SyncError(f"push failed: {error_line(failed)} (the pull ran)") from failed
