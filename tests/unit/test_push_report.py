"""The push's one line: counts in plain words, conflicts said by what happened to them."""

from __future__ import annotations

from sync.push.report import PushReport


def test_a_run_without_conflicts_does_not_mention_them() -> None:
    report = PushReport(run_id=3, updated=1, requests=1)
    assert report.describe() == (
        "push run 3: 1 updated, 0 created, 0 chat links, 0 already in amoCRM, 0 rejected, 1 request"
    )


def test_a_conflict_the_policy_settled_is_not_called_waiting() -> None:
    report = PushReport(run_id=4, updated=1, conflicts=1, requests=2)
    assert report.describe().endswith("2 requests; 1 new conflict settled by conflict_policy")
    assert "0 waiting" not in report.describe()


def test_waiting_and_decided_conflicts_are_told_apart() -> None:
    report = PushReport(run_id=5, linked=1, conflicts=5, held=2, waiting=3, decided=2, requests=4)
    assert report.describe() == (
        "push run 5: 0 updated, 0 created, 1 chat link, 0 already in amoCRM, 0 rejected, "
        "4 requests; 2 conflicts settled by a person, applied; 3 conflicts waiting for a person "
        "(amosync conflicts list)"
    )


def test_a_conflict_closed_because_both_sides_agree_is_not_called_settled_by_policy() -> None:
    report = PushReport(run_id=6, unchanged=1, conflicts=1, agreed=1, requests=1)
    assert report.describe().endswith("1 request; 1 conflict closed: both sides agree")


def test_contacts_left_for_the_next_push_are_said() -> None:
    """A deferred edit (amoCRM's version moved under a lost answer, or could not be read fresh)
    stays pending: "0 updated" alone read as if nothing was waiting."""
    report = PushReport(run_id=7, deferred=2, requests=3)
    assert report.describe().endswith(
        "3 requests; 2 contacts left pending for the next push: amoCRM's version changed "
        "meanwhile or could not be read fresh"
    )
    assert "left pending" not in PushReport(run_id=8, requests=1).describe()
