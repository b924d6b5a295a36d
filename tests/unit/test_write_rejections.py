"""A 400 rejects a whole batch; which of its entities it names decides what is resent
(`sync.amo.writes`). amoCRM may name entities by our request_id or by their index in the batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.amo.writes import Item, WriteResult, prepare, run_writes
from sync.errors import AmoRejectedError

Namer = Callable[[int, Item], str]


def _server(
    bad: set[str], name: Namer, sent: list[list[str]]
) -> Callable[[list[Item]], list[WriteResult]]:
    """A fake amoCRM: all-or-nothing batches; rejected entities named by `name(index, item)`."""

    def send(batch: list[Item]) -> list[WriteResult]:
        sent.append([i.request_id for i in batch])
        wrong = [(n, i) for n, i in enumerate(batch) if i.request_id in bad]
        if wrong:
            errors = {name(n, i): [_error(f"bad user of {i.request_id}")] for n, i in wrong}
            raise AmoRejectedError(
                "amoCRM rejected the request (400): Request validation failed",
                errors_by_request_id=errors,
            )
        return [WriteResult(i.request_id, 1000 + n) for n, i in enumerate(batch)]

    return send


def _error(detail: str) -> dict[str, str]:
    return {"code": "NotSupportedChoice", "path": "responsible_user_id", "detail": detail}


def _write(ids: list[str], server: Callable[[list[Item]], list[WriteResult]]) -> AmoRejectedError:
    items = prepare([{"request_id": rid, "name": rid} for rid in ids])
    with pytest.raises(AmoRejectedError) as info:
        run_writes(items, 50, server, lambda b: {}, max_retries=3, wait=lambda a: None, what="x")
    return info.value


def _rejected_detail(exc: AmoRejectedError) -> dict[str, str]:
    return {rid: errs[0]["detail"] for rid, errs in exc.errors_by_request_id.items()}


def test_entities_named_by_batch_index_are_mapped_by_position() -> None:
    ids = [str(-n) for n in range(1, 11)]  # temporary ids of new contacts: never an index
    sent: list[list[str]] = []
    exc = _write(ids, _server({"-3", "-8"}, lambda n, i: str(n), sent))
    assert _rejected_detail(exc) == {"-3": "bad user of -3", "-8": "bad user of -8"}
    assert exc.errors_by_request_id["-3"][0]["path"] == "responsible_user_id"
    assert [len(b) for b in sent] == [10, 8]  # one resend of the rest
    assert len(exc.results) == 8


def test_entities_named_by_our_request_id_are_set_aside() -> None:
    ids = [str(n) for n in range(101, 111)]
    sent: list[list[str]] = []
    exc = _write(ids, _server({"104"}, lambda n, i: i.request_id, sent))
    assert _rejected_detail(exc) == {"104": "bad user of 104"}
    assert [len(b) for b in sent] == [10, 9]


def test_an_index_that_is_also_one_of_our_ids_is_settled_by_splitting() -> None:
    ids = ["1", "2", "3", "4", "5", "6"]  # small contact ids: "1" could be ours or index 1
    sent: list[list[str]] = []
    exc = _write(ids, _server({"2"}, lambda n, i: str(n), sent))
    assert _rejected_detail(exc) == {"2": "bad user of 2"}  # not contact 1, nor everyone
    assert sorted(r.request_id for r in exc.results) == ["1", "3", "4", "5", "6"]  # type: ignore[attr-defined]


def test_a_400_that_names_nobody_of_ours_is_split_until_the_culprit_is_alone() -> None:
    ids = [str(n) for n in range(201, 217)]
    sent: list[list[str]] = []
    exc = _write(ids, _server({"205", "214"}, lambda n, i: "", sent))
    assert _rejected_detail(exc) == {"205": "bad user of 205", "214": "bad user of 214"}
    assert exc.errors_by_request_id["205"][0]["path"] == "responsible_user_id"
    assert len(exc.results) == 14
    assert len(sent) <= 2 * 2 * 4 + 1  # two culprits, log2(16) levels each
