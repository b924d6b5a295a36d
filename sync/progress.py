"""Progress of long runs on a terminal: a rich progress bar, or nothing when not a terminal.

The bar owns the terminal's last line while it draws: rich's `Live` redirects `sys.stderr` for
that time, and the log output (`sync.logs`) writes to whatever `sys.stderr` is at each line, so
log lines print above the bar, never glued to it. Until the run reports its first answer from
amoCRM (`start`), the bar says it is connecting and where to.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only to draw (~75 modules): not by a pull in cron or CI
    from rich.progress import Progress, TaskID


class BarProgress:
    """`sync.pull.Progress` drawn as a bar (a counter when the total is unknown)."""

    def __init__(self, progress: Progress | None, waiting: str = "") -> None:
        self._progress = progress
        self._task: TaskID | None = None
        if progress is not None and waiting:
            self._task = progress.add_task(waiting, total=None)

    def start(self, total: int | None, description: str) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(description, total=total)
        else:
            self._progress.reset(self._task, total=total, description=description)

    def advance(self, count: int) -> None:
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[self._task]
        if task.total is not None and task.completed + count > task.total:
            self._progress.update(self._task, total=task.completed + count)
        self._progress.advance(self._task, count)

    def say(self, description: str) -> None:
        """Change what the bar says it is doing (waiting for a daemon, connecting)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)


@contextmanager
def progress_bar(waiting: str = "", enabled: bool | None = None) -> Iterator[BarProgress]:
    """A bar on stderr if it is a terminal (or `enabled`), else a sink that draws nothing.
    `waiting` is what it says until the run calls `start` (e.g. `connecting to amoCRM at
    crm.example.com:443`)."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield BarProgress(None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("contacts"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield BarProgress(progress, waiting)


def connecting(host: str) -> str:
    """What the bar says before amoCRM's first answer."""
    return f"connecting to amoCRM at {host}"
