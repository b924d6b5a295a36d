"""Opt-in pytest plugin: where a psycopg connection dropped while open was made.

A connection garbage-collected while open warns from its finalizer, inside whichever test the
collector happens to interrupt, not the one that dropped it (seen twice in 4-worker runs on
2026-12-07; pyproject shows that warning instead of failing the innocent test). Run the suite with
`-p tests.conn_origins` and each such connection is written to
`$AMOSYNC_CONN_ORIGINS` (default `/tmp/amosync-conn-origins-<pid>.log`): the test and thread that
made it and the stack of the call. Two traced full runs found none (the leak is rare).
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

import psycopg
import pytest
from psycopg._connection_base import BaseConnection

_current = {"test": "(no test)"}
_origins: dict[int, tuple[str, str, str]] = {}
_connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
_finalize = BaseConnection.__del__


def _traced_connect(cls: type, *args: Any, **kwargs: Any) -> Any:
    conn = _connect(cls, *args, **kwargs)
    stack = "".join(traceback.format_stack(limit=25)[:-1])
    _origins[id(conn)] = (_current["test"], threading.current_thread().name, stack)
    return conn


def _traced_finalize(self: Any) -> None:
    origin = _origins.pop(id(self), None)
    if not self.closed and getattr(self, "_pool", None) is None:
        test, thread, stack = origin or ("(unknown)", "(unknown)", "")
        path = os.environ.get(
            "AMOSYNC_CONN_ORIGINS", f"/tmp/amosync-conn-origins-{os.getpid()}.log"
        )
        with open(path, "a", encoding="utf-8") as log:
            log.write(
                f"=== dropped open during {_current['test']}; made in {test} ({thread})\n{stack}\n"
            )
    _finalize(self)


psycopg.Connection.connect = classmethod(_traced_connect)  # type: ignore[method-assign,assignment]
psycopg.connect = psycopg.Connection.connect  # SQLAlchemy's dialect calls the module's name
BaseConnection.__del__ = _traced_finalize  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current["test"] = item.nodeid
