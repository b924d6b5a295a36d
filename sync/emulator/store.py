"""The account's state and every change to it, behind one re-entrant lock.

Reads for lists go through sorted views cached per (sort key, direction, trash); a changed
contact is taken out of them before the change and put back in order after it. Values stored
in contacts are never mutated in place (writes assign new lists), so a rendered page may be
serialised outside the lock.
"""

from __future__ import annotations

import copy
import random
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from typing import Any

from sync.emulator.clock import EmulatorClock
from sync.emulator.model import (
    ChatLink,
    Contact,
    CustomField,
    Event,
    Tag,
    User,
    field_ranks,
    in_field_order,
)
from sync.emulator.patches import ContactPatch, TagRef
from sync.emulator.seed import SeedData
from sync.emulator.settings import EmulatorSettings

SortKey = Callable[[Contact], tuple[int, int]]
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
SYSTEM_USER = 0
HISTORY_S = 300.0  # how long a replaced version is kept for lists that lag writes


class Account:
    """Contacts, fields, users, tags, events and chat links of one emulated account."""

    def __init__(self, settings: EmulatorSettings, clock: EmulatorClock, seed: SeedData) -> None:
        self.lock = threading.RLock()
        self.settings = settings
        self.clock = clock
        self._random = random.Random(settings.seed)  # noqa: S311 - ids for a simulation
        # tie orders of `tie_break="reshuffle"`, drawn anew for every list request
        self.tie_random = random.Random(settings.seed)  # noqa: S311 - an order, not security
        self.fields: dict[int, CustomField] = {f.id: f for f in seed.fields}
        self.fields_by_code = {f.code: f for f in seed.fields if f.code}
        self.field_ranks = field_ranks(seed.fields)
        self.users: dict[int, User] = {u.id: u for u in seed.users}
        self.tags: dict[int, Tag] = {t.id: t for t in seed.tags}
        self.contacts: dict[int, Contact] = {}
        self.chat_links: dict[str, ChatLink] = {}
        # contact id → its chats, and each chat's place in `chat_links` (first linked first):
        # a lookup by contact reads its own links, not every link of the account
        self.chats_by_contact: dict[int, set[str]] = {}
        self.chat_rank: dict[str, int] = {}
        for seeded in seed.chat_links:
            self._put_link(seeded)
        self.events: list[Event] = []
        self.version = 0
        self._views: dict[tuple[str, bool, bool], list[Contact]] = {}
        # contact id → [(clock time of a write, the version it replaced; None: created)]
        self._history: dict[int, list[tuple[float, Contact | None]]] = {}
        self._load_contacts(seed.contacts)
        self._next_link_id = 700_001 + len(seed.chat_links)
        self._next_tag_id = max(self.tags, default=900_000) + 1
        # called under the lock after every change: (add|update|delete|restore|responsible, contact)
        self.listeners: list[Callable[[str, Contact], None]] = []

    def _load_contacts(self, contacts: list[Contact]) -> None:
        for contact in contacts:
            self.contacts[contact.id] = contact
            if contact.is_deleted:
                self._event("contact_deleted", contact, contact.updated_by, contact.updated_at)
        self.events.sort(key=lambda e: (e.created_at, e.id))
        self._next_contact_id = max(self.contacts, default=20_000_000) + 1

    # --- reads ------------------------------------------------------------------------------

    def live(self, contact_id: int) -> Contact | None:
        contact = self.contacts.get(contact_id)
        return None if contact is None or contact.is_deleted else contact

    def listed(self, contact: Contact, as_of: float) -> Contact | None:
        """The version of `contact` that was current at clock time `as_of` (None: it did not
        exist yet): what a list lagging writes shows."""
        for written_at, before in self._history.get(contact.id, ()):
            if written_at > as_of:
                return before
        return contact

    def _keep_previous(self, contact_id: int, before: Contact | None) -> None:
        """Remember the version a write replaces. A shallow copy is a faithful snapshot: stored
        values are never mutated in place."""
        now = self.clock.now()
        kept = [(t, v) for t, v in self._history.get(contact_id, ()) if t > now - HISTORY_S]
        kept.append((now, copy.copy(before) if before is not None else None))
        self._history[contact_id] = kept

    def view(self, sort_field: str, descending: bool, deleted: bool) -> list[Contact]:
        """Contacts in list order for `order[sort_field]`, ties broken by id per settings."""
        key = (sort_field, descending, deleted)
        view = self._views.get(key)
        if view is None:
            chosen = [c for c in self.contacts.values() if c.is_deleted == deleted]
            view = sorted(chosen, key=self.sort_key(sort_field, descending))
            self._views[key] = view
        return view

    def sort_key(self, sort_field: str, descending: bool) -> SortKey:
        sign = -1 if descending else 1
        tie = -1 if self.settings.tie_break == "desc" else 1
        if sort_field == "id":
            return lambda c: (sign * c.id, 0)
        if self.settings.tie_break == "shuffle":  # equal keys in an order unrelated to ids
            salt = self.settings.seed * 2_654_435_761
            return lambda c: (
                sign * getattr(c, sort_field),
                (c.id * 2_246_822_519 ^ salt) % 1_000_003,
            )
        return lambda c: (sign * getattr(c, sort_field), tie * c.id)

    # --- writes -----------------------------------------------------------------------------

    def changed(self, contact: Contact | None = None) -> None:
        """Call after `contact` moved in the sort orders (it was `_unlist`ed first), or with no
        contact to drop every cached view."""
        self.version += 1
        if contact is None:
            self._views.clear()
            return
        for (sort_field, descending, deleted), view in self._views.items():
            if contact.is_deleted == deleted:
                insort(view, contact, key=self.sort_key(sort_field, descending))

    def _unlist(self, contact: Contact) -> None:
        """Take `contact` out of the cached views before its sort keys change: an edit then
        costs two bisects per view instead of re-sorting the account on the next list."""
        for (sort_field, descending, deleted), view in list(self._views.items()):
            if contact.is_deleted != deleted:
                continue
            key = self.sort_key(sort_field, descending)
            at = bisect_left(view, key(contact), key=key)
            if at < len(view) and view[at] is contact:
                del view[at]
            else:  # not where its key says: never expected, but a rebuild is always correct
                del self._views[(sort_field, descending, deleted)]

    def create(self, patch: ContactPatch, now: int, actor: int) -> Contact:
        contact = Contact(
            id=self._next_contact_id, name="", first_name="", last_name="",
            responsible_user_id=actor, group_id=self._group_of(actor), created_by=actor,
            updated_by=actor, created_at=now, updated_at=now,
        )  # fmt: skip
        self._next_contact_id += self._random.randint(1, 3)
        self.contacts[contact.id] = contact
        self._keep_previous(contact.id, None)
        self._apply(contact, patch, quiet=True)
        contact.name = contact.name or _joined_name(contact)
        self._event("contact_added", contact, contact.created_by, now)
        self._finish(contact)
        self._announce("add", contact)
        return contact

    def update(self, patch: ContactPatch, now: int, actor: int) -> Contact:
        assert patch.contact_id is not None
        contact = self.contacts[patch.contact_id]
        self._keep_previous(contact.id, contact)
        self._unlist(contact)
        responsible = contact.responsible_user_id
        contact.updated_by, contact.updated_at = actor, now
        self._apply(contact, patch, quiet=False)
        self._finish(contact)
        self._announce("update", contact)
        if contact.responsible_user_id != responsible:
            self._announce("responsible", contact)
        return contact

    def touch(self, contact: Contact, now: int, actor: int) -> None:
        """A save in the UI that changes nothing visible but `updated_at`."""
        self._keep_previous(contact.id, contact)
        self._unlist(contact)
        contact.updated_at, contact.updated_by = now, actor
        self.changed(contact)
        self._announce("update", contact)

    def trash(self, contact: Contact, now: int, actor: int, *, logged: bool = True) -> None:
        """`logged=False`: no `contact_deleted` event (a contact that vanishes unexplained)."""
        self._keep_previous(contact.id, contact)
        self._unlist(contact)
        contact.is_deleted, contact.updated_at, contact.updated_by = True, now, actor
        if logged:
            self._event("contact_deleted", contact, actor, now)
        self.changed(contact)
        self._announce("delete", contact)

    def restore(self, contact: Contact, now: int, actor: int) -> None:
        self._keep_previous(contact.id, contact)
        self._unlist(contact)
        contact.is_deleted, contact.updated_at, contact.updated_by = False, now, actor
        self._event("contact_restored", contact, actor, now)
        self.changed(contact)
        self._announce("restore", contact)

    def add_field(self, field: CustomField) -> None:
        """A custom field an administrator creates in amoCRM (after the client's last pull):
        writes accept it and `/api/v4/contacts/custom_fields` lists it at once."""
        with self.lock:
            if field.id in self.fields or (field.code and field.code in self.fields_by_code):
                raise ValueError(f"field {field.id} ({field.code}) exists already")
            self.fields[field.id] = field
            if field.code:
                self.fields_by_code[field.code] = field
            self.field_ranks = field_ranks(self.fields.values())

    def link_chat(self, contact_id: int, chat_id: str) -> ChatLink:
        """Link a chat to a contact; a chat belongs to one contact, so relinking moves it."""
        current = self.chat_links.get(chat_id)
        if current is not None and current.contact_id == contact_id:
            return current
        link = ChatLink(self._next_link_id, contact_id, chat_id)
        self._next_link_id += 1
        self._put_link(link)
        return link

    def _put_link(self, link: ChatLink) -> None:
        old = self.chat_links.get(link.chat_id)
        if old is not None:
            self.chats_by_contact.get(old.contact_id, set()).discard(link.chat_id)
        self.chat_rank.setdefault(link.chat_id, len(self.chat_rank))
        self.chat_links[link.chat_id] = link
        self.chats_by_contact.setdefault(link.contact_id, set()).add(link.chat_id)

    def links_of(self, contact_ids: Iterable[int], chat_ids: Iterable[str]) -> list[ChatLink]:
        """The chat links of these contacts or chats, in `chat_links` order."""
        chosen = {c for i in contact_ids for c in self.chats_by_contact.get(i, ())}
        chosen.update(c for c in chat_ids if c in self.chat_links)
        return [self.chat_links[c] for c in sorted(chosen, key=self.chat_rank.__getitem__)]

    def _announce(self, change: str, contact: Contact) -> None:
        for listener in self.listeners:
            listener(change, contact)

    def _finish(self, contact: Contact) -> None:
        contact.search_text = None
        self.changed(contact)

    def _apply(self, contact: Contact, patch: ContactPatch, *, quiet: bool) -> None:
        now, actor = contact.updated_at, contact.updated_by
        self._apply_scalars(contact, patch.scalars, quiet=quiet)
        for field_id, values in patch.custom_fields.items():
            self._apply_custom_field(contact, field_id, values, quiet=quiet)
        before = list(contact.tag_ids)
        contact.tag_ids = self._new_tag_ids(contact.tag_ids, patch)
        if not quiet:
            self._tag_events(contact, before, actor, now)

    def _apply_scalars(self, contact: Contact, scalars: dict[str, Any], *, quiet: bool) -> None:
        old_name, old_responsible = contact.name, contact.responsible_user_id
        for name, value in scalars.items():  # `name` is a field of its own: first/last edits
            setattr(contact, name, value)  # leave it as it is (only a create builds it)
        if "responsible_user_id" in scalars:
            contact.group_id = self._group_of(contact.responsible_user_id)
        if quiet:
            return
        if contact.name != old_name:
            before, after = (
                [{"name_field_value": {"name": old_name}}],
                [{"name_field_value": {"name": contact.name}}],
            )
            self._event(
                "name_field_changed", contact, contact.updated_by, None, after=after, before=before
            )
        if contact.responsible_user_id != old_responsible:
            self._event(
                "entity_responsible_changed", contact, contact.updated_by, None,
                after=[{"responsible_user": {"id": contact.responsible_user_id}}],
                before=[{"responsible_user": {"id": old_responsible}}],
            )  # fmt: skip

    def _apply_custom_field(
        self, contact: Contact, field_id: int, values: list[dict[str, Any]] | None, *, quiet: bool
    ) -> None:
        old = contact.custom_fields.get(field_id)
        if values and old is not None:
            contact.custom_fields = {**contact.custom_fields, field_id: values}  # keeps its place
        elif values:  # a new key would go last: a clear-and-set must not move the field
            merged = {**contact.custom_fields, field_id: values}
            contact.custom_fields = in_field_order(merged, self.field_ranks)
        else:
            contact.custom_fields = {
                k: v for k, v in contact.custom_fields.items() if k != field_id
            }
        if quiet or old == (values or None):
            return
        field = self.fields[field_id]
        after = [{"custom_field_value": {"field_id": field_id, "field_type": field.type,
                                         "values": values or []}}]  # fmt: skip
        self._event("custom_field_value_changed", contact, contact.updated_by, None, after=after)

    def _new_tag_ids(self, current: list[int], patch: ContactPatch) -> list[int]:
        tag_ids = list(current)
        if patch.tags_cleared:
            tag_ids = []
        elif patch.tags_set is not None:
            tag_ids = _unique(self.resolve_tag(ref).id for ref in patch.tags_set)
        added = [self.resolve_tag(ref).id for ref in patch.tags_add]
        deleted = {t.id for t in (self.find_tag(ref) for ref in patch.tags_delete) if t}
        return [t for t in _unique([*tag_ids, *added]) if t not in deleted]

    def _tag_events(self, contact: Contact, before: list[int], actor: int, now: int) -> None:
        for tag_id in (t for t in contact.tag_ids if t not in before):
            after = [{"tag": {"name": self.tags[tag_id].name}}]
            self._event("entity_tag_added", contact, actor, now, after=after)
        for tag_id in (t for t in before if t not in contact.tag_ids):
            removed = [{"tag": {"name": self.tags[tag_id].name}}]
            self._event("entity_tag_deleted", contact, actor, now, before=removed)

    def find_tag(self, ref: TagRef) -> Tag | None:
        kind, value = ref
        if kind == "id":
            return self.tags.get(int(value))
        return next((t for t in self.tags.values() if t.name == value), None)

    def resolve_tag(self, ref: TagRef) -> Tag:
        """The referenced tag; a name nobody used yet creates the tag, as amoCRM does."""
        tag = self.find_tag(ref)
        if tag is None:
            tag = Tag(self._next_tag_id, str(ref[1]))
            self._next_tag_id += 1
            self.tags[tag.id] = tag
        return tag

    def _group_of(self, user_id: int) -> int:
        user = self.users.get(user_id)
        return user.group_id if user else 0

    # --- events -----------------------------------------------------------------------------

    def _event(
        self,
        event_type: str,
        contact: Contact,
        actor: int,
        at: int | None,
        *,
        after: list[dict[str, Any]] | None = None,
        before: list[dict[str, Any]] | None = None,
    ) -> None:
        created_at = contact.updated_at if at is None else at
        event = Event(
            self._event_id(created_at), event_type, contact.id, "contact", actor, created_at,
            after or [], before or [],
        )  # fmt: skip
        self.events.append(event)

    def _event_id(self, at: int) -> str:
        """A lower-case ULID like amoCRM's: 48 bits of milliseconds, 80 random bits."""
        number = (at * 1000) << 80 | self._random.getrandbits(80)
        return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def search_text(contact: Contact, fields: dict[int, CustomField]) -> str:
    """What `query` searches: the name and every value, plus phone digits without formatting."""
    if contact.search_text is not None:
        return contact.search_text
    parts = [contact.name]
    for field_id, values in contact.custom_fields.items():
        for value in values:
            text = str(value.get("value", ""))
            parts.append(text)
            if fields[field_id].code == "PHONE":
                parts.append("".join(ch for ch in text if ch.isdigit()))
    contact.search_text = "\n".join(parts).casefold()
    return contact.search_text


def _joined_name(contact: Contact) -> str:
    return " ".join(part for part in (contact.first_name, contact.last_name) if part)


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))
