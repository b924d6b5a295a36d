"""SIGTERM and SIGINT for a one-shot command (`pull`, `push`, `sync`, `resync`, …): a clean,
bounded stop that exits 1 ("any other failure", CONTRACT.md). The daemon (`amosync run`) has
its own handlers (`sync.daemon.run`), installed over these.

First signal:
* a command talking to amoCRM (its session given to `CommandStop.watch`) stops its session for
  good: requests waiting for a start, a 429's pause or a retry give up at once and no new one
  is sent (one on the wire is answered and recorded first). The run then fails on its usual
  path: its `sync_runs` row is closed `failed` with "stopped by SIGTERM: …", a requested full
  resync it served is `pending` again, its locks are released, and a push keeps its in-flight
  record of whatever may have left (`sync.push`). A wait for another process's run lock ends;
* any other command gets `StoppedError` raised where it is (as Ctrl-C's KeyboardInterrupt
  would be), its transaction rolled back.
`sync.cli.main` then says `amosync: stopped by SIGTERM: …` and exits 1.

Bounded: if the command has not ended `GRACE_S` after the signal (a request on the wire slow to
answer, a statement waiting on a lock), or a second signal comes, the process exits 1 at once,
as kill -9 would: PostgreSQL rolls back the open transaction, the next run closes the row it
left `running`, and the push's in-flight records are made for exactly that.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from sync.errors import StoppedError

if TYPE_CHECKING:
    from sync.amo.session import AmoSession

GRACE_S = 5.0  # from the first signal to the exit, whatever the command is doing


class CommandStop:
    """The process's stop: installed once by `sync.cli.main`, fed the sessions to stop."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self.signal: str | None = None  # SIGTERM or SIGINT once one came
        self._event = threading.Event()
        self._sessions: list[AmoSession] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a caller's thread (tests): signals are not this command's to handle
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    @property
    def reason(self) -> str:
        return f"stopped by {self.signal}"

    def watch(self, session: AmoSession) -> None:
        """From now on a signal stops this session instead of interrupting the command."""
        self._sessions.append(session)
        if self.signal is not None:
            session.stop(self.reason, final=True)

    def sleep(self, seconds: float) -> None:
        """`time.sleep` that a signal ends with `StoppedError` (a wait for a run lock)."""
        if self._event.wait(seconds):
            raise StoppedError(f"{self.reason} while waiting for another process's run")

    def explain(self, message: str) -> str:
        """The line for a failure: said to be the stop's when a signal came."""
        if self.signal is None or message.startswith("stopped by "):
            return message
        return f"{self.reason}: {message}"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            exit_now(f"stopped by {name} (a second signal): exiting at once")
        self.signal = name
        # The deadline first, and the events set from a thread of their own: the handler runs
        # between two bytecodes of the main thread, which may hold one of those events' (not
        # reentrant) locks inside `Event.wait`; setting it here would deadlock the handler.
        threading.Thread(target=self._deadline, name="amosync-stop", daemon=True).start()
        threading.Thread(target=self._stop_all, name="amosync-stopping", daemon=True).start()
        if not self._sessions:
            raise StoppedError(self.reason)

    def _stop_all(self) -> None:
        for session in list(self._sessions):  # first: nothing more is sent once a wait ends
            session.stop(self.reason, final=True)
        self._event.set()

    def _deadline(self) -> None:  # a daemon thread: it ends with the process if that ends first
        time.sleep(self.grace_s)
        exit_now(f"{self.reason}: the command did not end within {self.grace_s:g} s; exiting")


def exit_now(line: str | None = None, *, code: int = 1) -> None:
    """Leave at once with `code` (and one line, if given): threads are not waited for,
    PostgreSQL rolls back what was open when the connections close. The daemon's way out too."""
    sys.stdout.flush()
    if line is not None:
        sys.stderr.write(f"amosync: {line}\n")
    sys.stderr.flush()
    os._exit(code)


STOP = CommandStop()
