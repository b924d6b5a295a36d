"""`amosync sync` pulls even when its push failed, unless the failure makes pulling pointless
(CONTRACT: "one push and one pull"); a failed push still ends it with exit 1 and one line."""

from __future__ import annotations

from typing import Any

import pytest

from sync.cli_sync import push_then_pull
from sync.errors import AmoBlockedError, AmoTransientError, StoreError, SyncError


class Report:
    def __init__(self, line: str) -> None:
        self.line = line

    def describe(self) -> str:
        return self.line


def _run(push_error: Exception | None, pull_error: Exception | None = None) -> list[str]:
    ran: list[str] = []

    def push() -> Any:
        ran.append("push")
        if push_error is not None:
            raise push_error
        return Report("pushed")

    def pull() -> Any:
        ran.append("pull")
        if pull_error is not None:
            raise pull_error
        return Report("pulled")

    try:
        push_then_pull(push, pull, stopping=lambda: False)
    finally:
        ran.append("end")
    return ran


def test_a_failed_push_still_pulls_and_then_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SyncError, match=r"^push failed: amoCRM 503 \(the pull ran\)$"):
        _run(AmoTransientError("amoCRM 503"))
    assert capsys.readouterr().out == "pulled\n"
    with pytest.raises(SyncError, match=r"^push failed: KeyError: 'x'; pull failed: db gone$"):
        _run(KeyError("x"), StoreError("db gone"))


@pytest.mark.parametrize(
    "error", [AmoBlockedError("blocked"), StoreError("PostgreSQL down", transient=True)]
)
def test_no_pull_when_the_push_failure_makes_it_pointless(error: Exception) -> None:
    ran: list[str] = []

    def push() -> Any:
        raise error

    def pull() -> Any:
        ran.append("pull")
        return Report("pulled")

    with pytest.raises(type(error)):
        push_then_pull(push, pull, stopping=lambda: False)
    assert ran == []


def test_both_succeed_print_both_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(None) == ["push", "pull", "end"]
    assert capsys.readouterr().out == "pushed\npulled\n"
