"""amoCRM webhook posts → hints for the daemon (pure: no I/O, no clock).

amoCRM posts `application/x-www-form-urlencoded` PHP-style arrays, several entities per post:

    contacts[update][0][id]=7793457&contacts[update][0][updated_at]=1642684812&
    contacts[update][0][type]=contact&contacts[update][0][custom_fields][0][id]=…&
    contacts[delete][0][id]=…&account[id]=29138932&account[subdomain]=acme

A hook is a **hint, never data**: it is unsigned and partial, so nothing from it is written to
the tables. What is kept is only what decides whether a pull is needed:

- `add` / `update` of a contact: its id and the `updated_at` it announces (`last_modified` in
  older payloads). The daemon skips the pull when the stored version is already that new (the
  echo of its own push, or a hook that arrived while a pull was storing that very version);
- `delete` / `restore`: a deletion changes no `updated_at`, only amoCRM's events show it, so the
  next pull must read the events (`Hint.events`);
- companies arrive under `contacts[…]` with `type=company`: ignored (the sync mirrors contacts);
- other entities (`leads[…]`, `companies[…]`), `account[…]`, unknown contact events (`note`,
  `responsible`) and entities without a numeric id are ignored.

A post with the right secret is never refused (the contract: answered 2xx whatever happens after;
amoCRM disables a hook after more than 100 failed deliveries in 2 hours). A body that cannot be
read or understood — not a form (no `=` in a field, bytes that are not UTF-8), another content
type, no usable length, over `MAX_BODY_BYTES` — is `Unreadable`, and still a hint: something
changed, so `unreadable_hint` asks for a pull that also reads the events (it may have been a
deletion).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_BODY_BYTES = 1 << 20  # amoCRM's posts are a few KB per entity; a bulk post is well under this
MAX_FIELDS = 100_000  # form fields parsed at most (bounds the work a hostile body can cause)
FORM_TYPE = "application/x-www-form-urlencoded"
VERSION_EVENTS = frozenset({"add", "update"})
EVENT_EVENTS = frozenset({"delete", "restore"})
MAX_PAYLOAD_CHARS = 7000  # a NOTIFY payload is limited to 8000 bytes

_ENTITY_KEY = re.compile(r"contacts\[([a-z_]+)\]\[(\d{1,9})\]\[([a-z_]+)\]")


class Unreadable(Exception):
    """A hook whose body cannot be read or understood; `reason` is the metric's label
    (content_type, length, too_large, not_form, read)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Hint:
    """What one or several hooks say the daemon should pull (see the module docstring)."""

    versions: dict[int, int | None] = field(default_factory=dict)  # contact id → updated_at
    events: bool = False  # a deletion or a restore: the pull must read amoCRM's events
    blind: bool = False  # pull, without a list of contacts to check (too many, or unnamed)
    contacts: int = 0  # contact entities in the post(s)
    ignored: int = 0  # entities that are not contact events we act on (companies, leads, …)
    posts: int = 0  # hook posts this hint comes from

    def __bool__(self) -> bool:
        return bool(self.versions) or self.events or self.blind

    def merge(self, other: Hint) -> None:
        """Add `other` in place; a contact keeps the newest `updated_at` announced (None, unknown,
        wins: it can never be found already stored)."""
        for contact, version in other.versions.items():
            self.note_version(contact, version)
        self.events |= other.events
        self.blind |= other.blind
        self.contacts += other.contacts
        self.ignored += other.ignored
        self.posts += other.posts

    def note_version(self, contact: int, version: int | None) -> None:
        if contact in self.versions:
            known = self.versions[contact]
            version = None if known is None or version is None else max(known, version)
        self.versions[contact] = version


def media_type(content_type: str | None) -> str:
    """`application/x-www-form-urlencoded; charset=UTF-8` → `application/x-www-form-urlencoded`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def declared_size(length: str | None) -> int:
    """The body's length from Content-Length (`Unreadable` "length" when missing or not a
    number: the body's end is unknown, so it is not read)."""
    if length is None or not (length.strip().isascii() and length.strip().isdigit()):
        raise Unreadable("length")
    return int(length)


def read_hook(content_type: str | None, body: bytes) -> Hint:
    """The hint of one post's body; `Unreadable` when it is not a form (a form is only
    understood under its own content type)."""
    if media_type(content_type) != FORM_TYPE:
        raise Unreadable("content_type")
    return parse_hook(body)


def parse_hook(body: bytes) -> Hint:
    """The hint of one form-encoded body (`Unreadable` "not_form" when it is not one)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=MAX_FIELDS)  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise Unreadable("not_form") from None
    return _hint(_entities(pairs))


def unreadable_hint() -> Hint:
    """What a hook that could not be read says: something changed, maybe a deletion."""
    return Hint(events=True, blind=True, posts=1)


def _entities(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, int], dict[str, str]]:
    """`contacts[<event>][<n>][<field>]` → {(event, n): {field: value}} (deeper keys, such as
    custom fields, are not needed and not kept)."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for key, value in pairs:
        match = _ENTITY_KEY.match(key)
        if match is None:
            continue
        event, index, name = match.group(1), int(match.group(2)), match.group(3)
        entity = found.setdefault((event, index), {})
        if key == match.group(0):  # a scalar field of the entity, not a nested array
            entity[name] = value
    return found


def _hint(entities: Mapping[tuple[str, int], Mapping[str, str]]) -> Hint:
    hint = Hint(posts=1)
    for (event, _index), entity in entities.items():
        contact = _number(entity.get("id"))
        known = event in VERSION_EVENTS or event in EVENT_EVENTS
        if not known or contact is None or contact <= 0 or entity.get("type") == "company":
            hint.ignored += 1
            continue
        hint.contacts += 1
        if event in EVENT_EVENTS:
            hint.events = True
        else:
            hint.note_version(contact, _version(entity))
    return hint


def _version(entity: Mapping[str, str]) -> int | None:
    for name in ("updated_at", "last_modified"):
        seconds = _number(entity.get(name))
        if seconds is not None and seconds > 0:
            return seconds
    return None


def _number(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit() or len(text) > 18:
        return None
    return int(text)


# --- hints between processes (a standby forwards them to the leader with NOTIFY) --------------


def encode_hint(hint: Hint, max_chars: int = MAX_PAYLOAD_CHARS) -> list[str]:
    """NOTIFY payloads (each under `max_chars`) that together say what `hint` says."""
    items = [[contact, version or 0] for contact, version in sorted(hint.versions.items())]
    flags = {"e": int(hint.events), "b": int(hint.blind), "n": hint.contacts, "h": hint.posts}
    payloads: list[str] = []
    chunk: list[list[int]] = []
    size = 40
    for item in items:
        width = len(str(item[0])) + len(str(item[1])) + 4
        if chunk and size + width > max_chars:
            payloads.append(json.dumps({"v": chunk}, separators=(",", ":")))
            chunk, size = [], 40
        chunk.append(item)
        size += width
    payloads.append(json.dumps({**flags, "v": chunk}, separators=(",", ":")))
    return payloads


def decode_hint(payload: str) -> Hint:
    """A forwarded payload as a hint; one that cannot be read asks for a blind pull (a standby
    received something, so something may have changed)."""
    try:
        data = json.loads(payload)
        hint = Hint(events=bool(data.get("e")), blind=bool(data.get("b")),
                    contacts=int(data.get("n", 0)), posts=int(data.get("h", 0)))  # fmt: skip
        for contact, version in data.get("v", []):
            hint.note_version(int(contact), int(version) or None)
    except (ValueError, TypeError, AttributeError):
        return Hint(blind=True, posts=1)
    return hint
