"""LISTEN for new `sync_requests` rows (their INSERT trigger NOTIFYs `notify_channel(schema)`).

The leader runs one `RequestListener` thread so `INSERT INTO sync_requests …` or `amosync resync`
starts a full resync at once instead of at the next `daemon.requests_poll_s` look. The poll stays
as the safety net: a notification sent while this connection was down is not lost, only late.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from psycopg import sql
from sqlalchemy.engine import Engine

from sync.db.capture import notify_channel
from sync.logs import get_logger

log = get_logger("sync.db.listen")

WAKE_S = 1.0  # how often the listener looks at its stop flag
RETRY_S = 5.0


class RequestListener:
    """Calls `on_request` whenever a sync_requests row is inserted, until `stop`."""

    def __init__(self, engine: Engine, schema: str, on_request: Callable[[], None]) -> None:
        self._engine = engine
        self._channel = notify_channel(schema)
        self._on_request = on_request
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amosync-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=WAKE_S * 3)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect later; the poll covers
                log.warning("requests_listen_failed", error=str(exc).strip().splitlines()[0])
                self.stop.wait(RETRY_S)

    def _listen(self) -> None:
        raw = self._engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            while not self.stop.is_set():
                if any(True for _ in conn.notifies(timeout=WAKE_S)):
                    self._on_request()
        finally:
            raw.invalidate()  # never hand a LISTENing session back to the pool
            raw.close()
