"""LISTEN for the leader's notifications, on one connection and one thread.

    listener = Listener(engine, {notify_channel(s): check_requests, changes_channel(s): note_edit},
                        on_reconnect=catch_up)
    listener.start() ... listener.close()

Channels (their triggers are in `sync.db.capture` and migration 0006):
  amosync_<schema>_requests   a `sync_requests` row was inserted: the full resync starts at once
  amosync_<schema>_changes    a local write captured changes into `sync_changes`: push soon
  amosync_<schema>_hooks      a standby forwards the webhooks it received (`payloads`: the
                              callback gets the notifications' payloads)

Each notification calls its channel's callback on the listener thread, so callbacks must be quick
and must not raise. When the connection fails (PostgreSQL restarted, the backend terminated) the
listener logs `listen_failed`, waits `retry_s` and connects again; notifications sent meanwhile
are lost, so after every reconnect it calls `on_reconnect` once (the daemon pushes and looks for
requests then). The daemon's interval jobs stay as the safety net behind all of this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from psycopg import sql
from sqlalchemy.engine import Engine

from sync.logs import get_logger

log = get_logger("sync.db.listen")

WAKE_S = 1.0  # how often the listener looks at its stop flag
RETRY_S = 5.0


class Listener:
    """Calls `handlers[channel]()` for every notification on `channel`, until `close`."""

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, Callable[[], None]],
        *,
        on_reconnect: Callable[[], None] | None = None,
        retry_s: float = RETRY_S,
        payloads: Mapping[str, Callable[[list[str]], None]] | None = None,
    ) -> None:
        self._engine = engine
        self._handlers = dict(handlers)
        self._payloads = dict(payloads or {})
        self._on_reconnect = on_reconnect
        self._retry_s = retry_s
        self._attempts = 0
        self.stop = threading.Event()
        self.listening = threading.Event()  # set while the connection LISTENs
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
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect later; the polls cover
                self.listening.clear()
                log.warning("listen_failed", error=str(exc).strip().splitlines()[0],
                            retry_in_s=self._retry_s)  # fmt: skip
                self.stop.wait(self._retry_s)

    def _listen(self) -> None:
        self._attempts += 1
        raw = self._engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True
            for channel in (*self._handlers, *self._payloads):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            if self._attempts > 1 and self._on_reconnect is not None:
                log.info("listen_reconnected", channels=sorted({*self._handlers, *self._payloads}))
                self._on_reconnect()  # what was announced while we were away is not lost
            self.listening.set()
            while not self.stop.is_set():
                self._dispatch(conn)
        finally:
            self.listening.clear()
            raw.invalidate()  # never hand a LISTENing session back to the pool
            raw.close()

    def _dispatch(self, conn: Any) -> None:
        """Wait up to WAKE_S for notifications; one call per channel that had any. The whole
        batch is read (a batch cut short would lose the notifications after the first)."""
        received: dict[str, list[str]] = {}
        for note in conn.notifies(timeout=WAKE_S, stop_after=1):
            received.setdefault(note.channel, []).append(note.payload)
        for channel in sorted(received):
            handler = self._handlers.get(channel)
            if handler is not None:
                handler()
            with_payloads = self._payloads.get(channel)
            if with_payloads is not None:
                with_payloads(received[channel])
