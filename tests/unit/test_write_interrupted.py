"""Errors inside a write call that are not amoCRM's answer to a batch (`sync.amo.writes`): a
refused read while looking for entities a 200 answer left out, and a stop during a retry pause.
Neither may resend what went through, and both must carry the results of what did."""

from __future__ import annotations

import pytest

from sync.amo.writes import Item, WriteResult, prepare, run_writes
from sync.errors import AmoRejectedError, AmoStoppedError, AmoWriteUnknownError


def _items(count: int) -> list[Item]:
    return prepare([{"request_id": str(-n), "name": f"New {n}"} for n in range(1, count + 1)])


def test_a_refused_read_for_an_entity_the_answer_left_out_resends_nothing() -> None:
    """Before the fix the read's 400 was taken for a rejection of the batch: the batch was split
    and both halves POSTed again, creating the contact the answer did name a second time."""
    sent: list[list[str]] = []

    def send(batch: list[Item]) -> list[WriteResult]:
        sent.append([i.request_id for i in batch])
        return [WriteResult(batch[0].request_id, 101)]  # the answer leaves the second out

    def reconcile(batch: list[Item]) -> dict[str, WriteResult]:
        raise AmoRejectedError("amoCRM rejected the request (400)", errors_by_request_id={})

    with pytest.raises(AmoWriteUnknownError) as info:
        run_writes(
            _items(2), 50, send, reconcile, max_retries=3, wait=lambda a: None,
            what="contacts created", blind_resend=False,
        )  # fmt: skip
    assert not isinstance(info.value, AmoRejectedError)  # not a verdict on the entities
    assert sent == [["-1", "-2"]]
    assert [r.request_id for r in info.value.results] == ["-1"]  # type: ignore[attr-defined]


def test_a_stop_during_a_retry_pause_keeps_what_went_through() -> None:
    """Before the fix the stop left the call without `.results`: updates amoCRM applied were not
    recorded (and were sent again by the next run)."""
    sent: list[list[str]] = []

    def send(batch: list[Item]) -> list[WriteResult]:
        sent.append([i.request_id for i in batch])
        if len(sent) == 1:
            return [WriteResult(i.request_id, 100 + n) for n, i in enumerate(batch)]
        raise AmoWriteUnknownError("no answer", status=504)

    def wait(attempt: int) -> None:
        raise AmoStoppedError("the process is stopping")

    with pytest.raises(AmoStoppedError) as info:
        run_writes(_items(4), 2, send, lambda b: {}, max_retries=3, wait=wait, what="contacts")
    assert sent == [["-1", "-2"], ["-3", "-4"]]
    assert [r.request_id for r in info.value.results] == ["-1", "-2"]  # type: ignore[attr-defined]
