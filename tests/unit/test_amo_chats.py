"""`sync.amo.chats`: chat links read in whichever form the server honours, and link POST answers
matched whatever their numbering. A fake `get` plays each stand-in (no HTTP here: the real
emulator runs in tests/integration/test_pull_chat_standins.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from sync.amo.chats import LINKS_CAP, PROBES, ChatForm, ChatReader, parse_links
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.amo.session import Reply
from sync.amo.writes import Item
from sync.errors import AmoAuthError, AmoError, AmoRejectedError
from tests.unit.amo_helpers import FakeClock, Script, reply
from tests.unit.amo_helpers import config as amo_config

LINKS = {cid: [f"chat-{cid}"] for cid in range(1, 301) if cid % 10 == 3}  # 30 linked contacts


def _link(cid: int, chat: str) -> dict[str, Any]:
    return {"chat_id": chat, "contact_id": cid, "id": 7000 + cid}


def _answer(links: list[dict[str, Any]], **extra: Any) -> Reply:
    if not links and not extra:
        return Reply(204, None, {})
    return Reply(200, {"_total_items": len(links), "_embedded": {"chats": links}, **extra}, {})


class StandIn:
    """A chats endpoint: `array` says what the array form does (honoured / refused / ignored /
    empty / first); `page` > 0 pages the answers (`_links.next`, `page=N`)."""

    def __init__(self, array: str = "honoured", page: int = 0, links: Any = None) -> None:
        self.array, self.page = array, page
        self.links = LINKS if links is None else links
        self.asked: list[dict[str, Any]] = []

    def every(self) -> list[dict[str, Any]]:
        return [_link(cid, chat) for cid, chats in self.links.items() for chat in chats]

    def __call__(self, path: str, params: Mapping[str, Any]) -> Reply:
        assert path == "/api/v4/contacts/chats"
        self.asked.append(dict(params))
        value = params["contact_id"]
        ids = [int(value)] if not isinstance(value, list) else value
        if isinstance(value, list):
            if self.array == "refused":
                raise AmoRejectedError("amoCRM rejected the request (400)", status=400)
            if self.array == "empty":
                return Reply(204, None, {})
            if self.array == "first":
                ids = ids[:1]
        links = [x for x in self.every() if self.array == "ignored" or x["contact_id"] in ids]
        if not self.page:
            return _answer(links)
        number = int(params.get("page", 1))
        part = links[(number - 1) * self.page : number * self.page]
        more = len(links) > number * self.page
        return _answer(part, **({"_links": {"next": {"href": "x?page=2"}}} if more else {}))

    def arrays(self) -> int:
        return sum(isinstance(p["contact_id"], list) for p in self.asked)


def _truth(ids: list[int]) -> list[tuple[int, str]]:
    return sorted((cid, chat) for cid in ids for chat in LINKS.get(cid, ()))


def _read(reader: ChatReader, ids: list[int]) -> list[tuple[int, str]]:
    return sorted((x["contact_id"], x["chat_id"]) for x in reader.by_contacts(ids))


BATCH = list(range(1, 251))


def test_the_fast_path_is_one_array_request_per_batch_and_proves_the_form() -> None:
    server, form = StandIn(), ChatForm()
    reader = ChatReader(server, form)
    assert _read(reader, BATCH) == _truth(BATCH)
    assert _read(reader, [1, 2]) == []  # proven: an empty answer is believed, no probe
    assert len(server.asked) == 2
    assert server.arrays() == 2
    assert form.state == "batched"


def test_one_contact_is_asked_in_the_documented_scalar_form() -> None:
    server = StandIn()
    assert _read(ChatReader(server, ChatForm()), [13]) == [(13, "chat-13")]
    assert server.asked == [{"contact_id": 13}]


@pytest.mark.parametrize("array", ["refused", "ignored", "empty", "first"])
def test_a_stand_in_that_does_not_honour_the_array_form_loses_no_link(
    array: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server, form = StandIn(array), ChatForm()
    reader = ChatReader(server, form)
    assert _read(reader, BATCH) == _truth(BATCH)
    assert form.state == "scalar"
    asked = len(server.asked)
    second = list(range(251, 301))
    assert _read(reader, second) == _truth(second)
    assert len(server.asked) - asked == len(second)  # straight to one request per contact
    assert server.arrays() == 1  # the array form is not tried again in this process
    assert capsys.readouterr().out.count("amo_chats_array_form_not_honoured") == 1


def test_verification_is_bounded_when_no_contact_has_links() -> None:
    server, form = StandIn("empty", links={}), ChatForm()
    reader = ChatReader(server, form)
    assert _read(reader, BATCH) == []
    assert _read(reader, BATCH) == []
    assert len(server.asked) == 2 + PROBES
    assert form.state == "unknown"


def test_a_batch_that_finds_the_probes_spent_waits_for_those_still_out() -> None:
    """Batch A spends the last probe on a linked contact; batch B, answered empty beside it,
    finds no probe left while A's is still out. B must not believe its empty answer: A's probe
    proves the array form loses links, and B is asked again contact by contact."""
    last = PROBES  # A's contacts 1..PROBES have no links but the last
    links = {last: ["chat-a"], 1001: ["chat-b"]}
    server = StandIn("empty", links=links)
    form = ChatForm()
    reader = ChatReader(server, form)
    b_done = threading.Event()

    def slow(path: str, params: Mapping[str, Any]) -> Reply:
        if params["contact_id"] == last:  # A's last probe: held until B is waiting or done
            started.set()
            while not b_done.is_set() and form.waiting == 0:
                time.sleep(0.001)
        return server(path, params)

    started = threading.Event()
    reader.get = slow
    got: dict[str, list[tuple[int, str]]] = {}
    a = threading.Thread(target=lambda: got.update(a=_read(reader, list(range(1, last + 1)))))
    a.start()
    assert started.wait(5)

    def batch_b() -> None:
        got["b"] = _read(reader, [1001, 1002])
        b_done.set()

    b = threading.Thread(target=batch_b)
    b.start()
    a.join(5)
    b.join(5)
    assert got == {"a": [(last, "chat-a")], "b": [(1001, "chat-b")]}
    assert form.state == "scalar"
    assert form.probing == 0


def test_auth_and_block_errors_are_not_taken_for_a_refused_form() -> None:
    def denied(path: str, params: Mapping[str, Any]) -> Reply:
        raise AmoAuthError("amoCRM denied access (403)", status=403)

    form = ChatForm()
    with pytest.raises(AmoAuthError):
        ChatReader(denied, form).by_contacts(BATCH)
    assert form.state == "unknown"


def test_a_refusal_of_the_scalar_form_itself_is_raised() -> None:
    def broken(path: str, params: Mapping[str, Any]) -> Reply:
        raise AmoError("amoCRM answered 404", status=404)

    with pytest.raises(AmoError):
        ChatReader(broken, ChatForm()).by_contacts(BATCH)


@pytest.mark.parametrize("array", ["honoured", "ignored"])
def test_paged_answers_are_followed(array: str) -> None:
    server = StandIn(array, page=4)
    assert _read(ChatReader(server, ChatForm()), BATCH) == _truth(BATCH)
    assert any(p.get("page") == 2 for p in server.asked)


def test_a_capped_answer_is_asked_again_in_halves() -> None:
    many = {cid: [f"chat-{cid}-{n}" for n in range(3)] for cid in BATCH}  # 750 links

    def capped(path: str, params: Mapping[str, Any]) -> Reply:
        value = params["contact_id"]
        ids = set(value) if isinstance(value, list) else {int(value)}
        links = [_link(c, chat) for c in sorted(ids) for chat in many.get(c, ())]
        return _answer(links[:LINKS_CAP])

    got = ChatReader(capped, ChatForm()).by_contacts(BATCH)
    assert len(got) == 750


def _items(*pairs: tuple[int, str]) -> list[Item]:
    return [
        Item(f"-{n}", {"contact_id": c, "chat_id": chat, "request_id": f"-{n}"})
        for n, (c, chat) in enumerate(pairs, 1)
    ]


def test_link_answers_are_matched_by_request_id_or_by_pair() -> None:
    batch = _items((5, "a"), (6, "b"), (7, "c"))
    data = {
        "_embedded": {
            "chats": [
                {"contact_id": 6, "chat_id": "b", "id": 61, "request_id": "0"},  # renumbered
                {"contact_id": 5, "chat_id": "a", "id": 51, "request_id": "-1"},
                {"contact_id": 9, "chat_id": "z", "id": 91, "request_id": "2"},  # not ours
            ]
        }
    }
    got = {r.request_id: r.id for r in parse_links(batch, data)}
    assert got == {"-1": 51, "-2": 61}  # "-3" was not named: the caller reads it back


def test_link_chats_copes_with_an_answer_that_names_fewer_or_other_entries() -> None:
    """The POST answer renumbers one link, leaves one out and adds one not sent: each sent
    link gets its result, the one left out read back from the links of its contact."""
    posted = reply(
        200,
        {
            "_total_items": 3,
            "_embedded": {
                "chats": [
                    {"contact_id": 5, "chat_id": "a", "id": 51, "request_id": "0"},
                    {"contact_id": 9, "chat_id": "z", "id": 91, "request_id": "1"},
                    {"contact_id": 6, "chat_id": "b", "id": 61, "request_id": "l-2"},
                ]
            },
        },
    )
    read_back = reply(200, {"_total_items": 1, "_embedded": {"chats": [_link(7, "c")]}})
    script = Script(posted, read_back)
    client = AmoClient(
        amo_config(), None, transport=script.transport, limiter=RateLimiter(1000),
        chat_form=ChatForm(),
    )  # fmt: skip
    client.session.clock = FakeClock()
    links = [
        {"contact_id": 5, "chat_id": "a", "request_id": "l-1"},
        {"contact_id": 6, "chat_id": "b", "request_id": "l-2"},
        {"contact_id": 7, "chat_id": "c", "request_id": "l-3"},
    ]
    got = {r.request_id: (r.id, r.reconciled) for r in client.link_chats(links)}
    assert got == {"l-1": (51, False), "l-2": (61, False), "l-3": (7007, True)}
    assert script.requests[1].url.params["contact_id"] == "7"  # one contact: the scalar form
