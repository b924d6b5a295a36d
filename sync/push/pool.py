"""A small scheduler for push's updates: "read a chunk, then write its batches" on N threads.

Each thread takes, in order of preference: a write batch that is ready; else the next chunk to
read (whose batches then become ready); else it waits while reads are still running, and stops
when nothing is left. Writes first keeps the time between amoCRM's version being read and the
PATCH built on it short; independent tasks keep every thread busy up to the end, so the rate
budget, not a thread waiting on its own chain, sets the pace. The first failure stops the others
from taking new work and is raised to the caller.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

C = TypeVar("C")
B = TypeVar("B")


class ReadThenWrite(Generic[C, B]):
    def __init__(
        self,
        chunks: Sequence[C],
        read: Callable[[C], Sequence[B]],
        write: Callable[[B], None],
    ) -> None:
        self._chunks: deque[C] = deque(chunks)
        self._batches: deque[B] = deque()
        self._read, self._write = read, write
        self._reading = 0
        self._failure: BaseException | None = None
        self._cond = threading.Condition()

    def run(self, threads: int) -> None:
        workers = [
            threading.Thread(target=self._loop, name=f"push-{n}", daemon=True)
            for n in range(max(1, threads))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self._failure is not None:
            raise self._failure

    def _loop(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            kind, item = task
            try:
                if kind == "write":
                    self._write(item)  # type: ignore[arg-type]
                else:
                    batches = self._read(item)  # type: ignore[arg-type]
                    with self._cond:
                        self._batches.extend(batches)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by run()
                with self._cond:
                    self._failure = self._failure or exc
            finally:
                if kind == "read":
                    with self._cond:
                        self._reading -= 1
                with self._cond:
                    self._cond.notify_all()

    def _next(self) -> tuple[str, C | B] | None:
        with self._cond:
            while True:
                if self._failure is not None:
                    return None
                if self._batches:
                    return "write", self._batches.popleft()
                if self._chunks:
                    self._reading += 1
                    return "read", self._chunks.popleft()
                if not self._reading:
                    return None
                self._cond.wait()
