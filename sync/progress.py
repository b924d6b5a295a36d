"""Progress of long runs on a terminal: a rich progress bar, or nothing when not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class BarProgress:
    """`sync.pull.Progress` drawn as a bar (a counter when the total is unknown)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, total: int | None, description: str) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total)

    def advance(self, count: int) -> None:
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[self._task]
        if task.total is not None and task.completed + count > task.total:
            self._progress.update(self._task, total=task.completed + count)
        self._progress.advance(self._task, count)


@contextmanager
def progress_bar(enabled: bool | None = None) -> Iterator[BarProgress]:
    """A bar on stderr if it is a terminal (or `enabled`), else a sink that draws nothing."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield BarProgress(None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("contacts"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield BarProgress(progress)
