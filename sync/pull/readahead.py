"""Iterate a source on a background thread, a bounded number of items ahead of the consumer.

    with ReadAhead(walk, depth=2, name="pull-walk", prepare=with_links, discard=cancel) as ahead:
        for batch, links in ahead:
            store(batch, links)   # meanwhile the walk is already asking for the next page

`prepare` runs on the producer thread for each item as it arrives (to start more work early);
the consumer gets what it returns. Items arrive in the source's order. An exception raised by
the source reaches the consumer after every item produced before it, so a consumer that stores
items in order has stored all of them when it sees the error.

Leaving the block stops the producer before its next item, hands the prepared items nobody took
to `discard` (e.g. to cancel work they started), closes the source and waits for the producer
to finish: when the block is over, nothing started by it is still running, so whatever the
caller does next (count requests, release a lock, start another run) sees a quiet client. Only
an interrupt (Ctrl-C, SystemExit) leaves without waiting; the producer is a daemon thread, so a
request it is stuck in cannot keep the process alive.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")

_PUT_POLL_S = 0.1  # how often a producer blocked on a full queue checks for a stop


class _End:
    """Marks the end of the source."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Generic[S, T]):
    """A context manager and iterator; iterate it once, inside the block."""

    def __init__(
        self,
        source: Iterator[S],
        *,
        depth: int,
        name: str,
        prepare: Callable[[S], T],
        discard: Callable[[T], None] | None = None,
    ) -> None:
        self._source, self._prepare, self._discard = source, prepare, discard
        self._queue: queue.Queue[T | _End | _Failed] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def __enter__(self) -> ReadAhead[S, T]:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: Any) -> None:
        self._stop.set()
        self._drain()
        if kind is not None and issubclass(kind, KeyboardInterrupt | SystemExit):
            return
        self._thread.join()
        self._drain()  # what the producer put while it noticed the stop

    def __iter__(self) -> Iterator[T]:
        while True:
            entry = self._queue.get()
            if isinstance(entry, _End):
                return
            if isinstance(entry, _Failed):
                raise entry.error
            yield entry

    def _produce(self) -> None:
        try:
            for item in self._source:
                if self._stop.is_set():
                    return
                prepared = self._prepare(item)
                if not self._put(prepared):
                    self._throw_away(prepared)
                    return
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - the consumer re-raises it
            self._put(_Failed(exc))
        else:
            self._put(_End())
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _put(self, entry: T | _End | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(entry, _End | _Failed):
                self._throw_away(entry)

    def _throw_away(self, prepared: T) -> None:
        if self._discard is not None:
            self._discard(prepared)
