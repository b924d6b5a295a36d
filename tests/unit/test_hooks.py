"""The webhook body parser on amoCRM's payload shapes: PHP-style form arrays, several entities per
post, companies under `contacts` with type=company, other entities, account keys, garbage."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from sync.daemon.webhooks.hints import (
    Hint,
    Unreadable,
    declared_size,
    decode_hint,
    encode_hint,
    parse_hook,
    read_hook,
    unreadable_hint,
)

FORM = "application/x-www-form-urlencoded"


def _body(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode()


def _contact(event: str, n: int, contact: int, updated: int, **extra: str) -> list[tuple[str, str]]:
    """One entity as amoCRM sends it: scalar fields plus nested custom fields."""
    p = f"contacts[{event}][{n}]"
    pairs = [
        (f"{p}[id]", str(contact)),
        (f"{p}[name]", "Иван Петров & Co = 1"),
        (f"{p}[responsible_user_id]", "6101560"),
        (f"{p}[date_create]", "1608138130"),
        (f"{p}[last_modified]", str(updated)),
        (f"{p}[created_at]", "1608138130"),
        (f"{p}[updated_at]", str(updated)),
        (f"{p}[custom_fields][0][id]", "293097"),
        (f"{p}[custom_fields][0][name]", "Телефон"),
        (f"{p}[custom_fields][0][values][0][value]", "+7 900 000-00-00"),
        (f"{p}[custom_fields][0][values][0][enum]", "395207"),
        (f"{p}[custom_fields][1][values][0]", "1471813200"),
    ]
    pairs += [(f"{p}[{k}]", v) for k, v in extra.items()]
    return pairs


ACCOUNT = [
    ("account[subdomain]", "acme"),
    ("account[id]", "29138932"),
    ("account[_links][self]", "https://acme.amocrm.ru"),
]


def test_an_update_of_several_contacts_in_one_post() -> None:
    pairs = [
        *_contact("update", 0, 101, 1700000010, type="contact"),
        *_contact("update", 1, 102, 1700000011),  # no type: a contact
        *ACCOUNT,
    ]
    hint = parse_hook(_body(pairs))
    assert hint.versions == {101: 1700000010, 102: 1700000011}
    assert (hint.events, hint.blind, hint.contacts, hint.ignored, hint.posts) == (
        False,
        False,
        2,
        0,
        1,
    )


def test_companies_under_contacts_leads_and_unknown_events_are_ignored() -> None:
    pairs = [
        *_contact("update", 0, 7793457, 1642684812, type="company"),
        ("leads[update][0][id]", "77"),
        ("leads[status][0][id]", "78"),
        ("companies[add][0][id]", "79"),
        ("contacts[note][0][note][text]", "called"),
        ("contacts[note][0][id]", "80"),
        ("contacts[update][1][id]", "not-a-number"),
        ("contacts[update][2][name]", "no id at all"),
        *ACCOUNT,
    ]
    hint = parse_hook(_body(pairs))
    assert not hint
    assert hint.versions == {}
    assert hint.ignored == 4  # the company, the note, the bad id, the entity without an id


def test_add_update_delete_and_restore_together() -> None:
    pairs = [
        *_contact("add", 0, 201, 1700000100, type="contact"),
        *_contact("update", 0, 202, 1700000101),
        ("contacts[delete][0][id]", "203"),
        ("contacts[delete][0][type]", "contact"),
        ("contacts[restore][0][id]", "204"),
    ]
    hint = parse_hook(_body(pairs))
    assert hint.versions == {201: 1700000100, 202: 1700000101}
    assert hint.events  # deletions and restores are read from amoCRM's events by the pull
    assert hint.contacts == 4


def test_the_newest_announced_version_of_a_contact_wins_and_an_unknown_one_wins_over_all() -> None:
    pairs = [
        *_contact("update", 0, 301, 1700000200),
        *_contact("update", 1, 301, 1700000205),
        *_contact("update", 2, 301, 1700000201),
        ("contacts[update][3][id]", "302"),  # no updated_at nor last_modified
        *_contact("update", 4, 302, 1700000300),
    ]
    hint = parse_hook(_body(pairs))
    assert hint.versions == {301: 1700000205, 302: None}


def test_last_modified_is_used_when_updated_at_is_missing() -> None:
    pairs = [("contacts[update][0][id]", "5"), ("contacts[update][0][last_modified]", "1700000009")]
    assert parse_hook(_body(pairs)).versions == {5: 1700000009}


def test_an_empty_body_and_an_account_only_post_are_accepted_and_mean_nothing() -> None:
    assert not parse_hook(b"")
    assert not parse_hook(_body(ACCOUNT))


@pytest.mark.parametrize(
    "body",
    [
        b'{"contacts": {"update": [{"id": 1}]}}',  # JSON sent with the form content type
        b"\xff\xfe garbage",
        b"contacts[update][0][id]",  # a field without a value
        b"a=1&&b=2",
    ],
)
def test_a_body_that_is_not_a_form_is_unreadable(body: bytes) -> None:
    with pytest.raises(Unreadable) as caught:
        parse_hook(body)
    assert caught.value.reason == "not_form"


@pytest.mark.parametrize(
    "content_type", ["application/json", None, "multipart/form-data; boundary=x", "text/plain"]
)
def test_another_content_type_is_not_interpreted(content_type: str | None) -> None:
    with pytest.raises(Unreadable) as caught:
        read_hook(content_type, b"contacts[update][0][id]=1")
    assert caught.value.reason == "content_type"


@pytest.mark.parametrize("length", [None, "ten", "-1", "", "1e3", "\u00b2"])
def test_a_missing_or_bad_length_is_unreadable(length: str | None) -> None:
    with pytest.raises(Unreadable) as caught:
        declared_size(length)
    assert caught.value.reason == "length"


def test_a_form_with_a_charset_is_read() -> None:
    hint = read_hook("Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                     b"contacts[update][0][id]=7&contacts[update][0][updated_at]=5")  # fmt: skip
    assert hint.versions == {7: 5}
    assert declared_size(" 12 ") == 12


def test_an_unreadable_hook_still_asks_for_a_pull_that_reads_the_events() -> None:
    hint = unreadable_hint()
    assert hint
    assert (hint.blind, hint.events, hint.posts) == (True, True, 1)


def test_forwarded_hints_survive_the_notify_payload_limit() -> None:
    hint = Hint(events=True, contacts=3000, posts=40)
    for contact in range(1, 3001):
        hint.note_version(10_000_000 + contact, 1_700_000_000 + contact if contact % 7 else None)
    payloads = encode_hint(hint)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    back = Hint()
    for payload in payloads:
        back.merge(decode_hint(payload))
    assert back.versions == hint.versions
    assert (back.events, back.blind, back.contacts, back.posts) == (True, False, 3000, 40)


def test_an_unreadable_forwarded_payload_asks_for_a_blind_pull() -> None:
    hint = decode_hint("not json")
    assert hint.blind
    assert decode_hint('{"v": [["x", 1]]}').blind
