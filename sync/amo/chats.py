"""Contact ↔ chat links read from `/api/v4/contacts/chats` whichever query form the server honours.

The contacts reference says `contact_id` "takes an array of integers", but the vendor pages
collected in amocrm-api.md §8 show only the scalar `?contact_id=N`, and no per-request cap is
documented anywhere; the array form `contact_id[]=..` (up to 250 contacts a request) is the fast
path, but a stand-in or proxy built from the scalar examples may not honour it. Such a server
may answer the array form with an error, with links of contacts that were not asked for (the
filter ignored), with only some of the asked contacts' links (one value of the array kept), or
with nothing at all. So:

- one contact is always asked for in the documented scalar form;
- a batch goes out in the array form (the fast path) while the server is not caught ignoring it:
  a 4xx refusal of the array form, or a link of a contact outside the batch, switches this
  process to the scalar form, one request per contact, for every later batch (`ChatForm`, shared
  by the clients of one origin; one warning line says why and what it costs);
- until a batch answer lists the links of at least two of its contacts (which neither a server
  that ignores the filter, since a foreign link is caught, nor one that keeps one value of the
  array can do), the form is unproven: the contacts a batch answer shows no link for are asked
  again one by one, at most `PROBES` of them for the origin across processes (the pull stores
  what was spent, `sync.pull.chat_form`; at most `FEW_PROBES` in a process while the account
  shows no link, as the pull judges it), and a link found that way proves the array form
  loses links (→ the scalar form); a batch that finds the probes spent waits for those still
  out before it believes its answer, since one of them may yet prove it;
- an answer with `_links.next` is followed page by page (by number, with the same parameters);
  one that looks cut (`_total_items` above what came, a page that repeats the previous one,
  or `LINKS_CAP` links and no `next`) is not believed: the batch is asked again in halves,
  down to single contacts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.amo.session import Reply
from sync.amo.writes import Item, WriteResult, to_result
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoError,
    AmoPaymentError,
    AmoTransientError,
)
from sync.logs import get_logger

log = get_logger("sync.amo.chats")

CHATS = "/api/v4/contacts/chats"
PROBES = 50  # contacts asked again one by one while the array form is unproven (per origin)
FEW_PROBES = 10  # of them, at most this many in a process while the account shows no link
LINKS_CAP = 250  # a page this long without `next` may have been cut at the server's maximum
MAX_PAGES = 100  # pages of one chat-links answer followed before it is called cut
NOT_REFUSALS = (401, 402, 403, 429)  # auth, payment, block, rate: not about the query form

Get = Callable[[str, Mapping[str, Any]], Reply]


@dataclass
class ChatForm:
    """What this process knows of the server's array form: `unknown` (not yet proven),
    `batched` (a batch answer listed links of two of its contacts), `scalar` (caught ignoring
    it: one request per contact from now on). Thread-safe; shared per origin."""

    state: str = "unknown"
    probes_left: int = PROBES
    spent: int = 0  # probes this process took
    probing: int = 0  # probes out now: their answers may still decide the form
    waiting: int = 0  # batches waiting for those answers (seen by tests)
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def scalar(self) -> bool:
        return self.state == "scalar"

    def confirm(self) -> None:
        with self._lock:
            if self.state == "unknown":
                self.state = "batched"
                self._lock.notify_all()
                log.info("amo_chats_array_form_honoured")

    def trust(self) -> None:
        """A run before this process proved the array form here (stored by the pull): no
        probes. Refusals and foreign or cut answers are still caught."""
        with self._lock:
            if self.state == "unknown":
                self.state = "batched"

    def allow(self, spent_before: int, few: bool) -> None:
        """The probes this process may still take: `PROBES` for the origin less `spent_before`
        (what the runs before this one stored, this process's included), and while the account
        shows no link (`few`) at most `FEW_PROBES` in this process (a probe of a contact without
        links proves nothing; it costs a request all the same)."""
        with self._lock:
            left = max(0, PROBES - spent_before)
            self.probes_left = min(left, max(0, FEW_PROBES - self.spent)) if few else left
            self._lock.notify_all()

    def to_scalar(self, why: str, batch: int) -> None:
        with self._lock:
            if self.state == "scalar":
                return
            self.state = "scalar"
            self._lock.notify_all()
        log.warning(
            "amo_chats_array_form_not_honoured",
            reason=why,
            cost=f"chat links are now read one contact per request, up to {batch} requests "
            "where one sufficed (the documented contact_id=N form), for the rest of this process",
        )

    def take_probe(self) -> bool:
        """A probe to send (`probe_done` after it), or False: the form is decided, or the
        probes are spent. Spent while others' probes are still out, it waits for their answers
        first: one of them may yet prove the array form loses links, and a batch believed
        empty before that would lose its links for good."""
        with self._lock:
            if self.state == "unknown" and self.probes_left > 0:
                self.probes_left -= 1
                self.spent += 1
                self.probing += 1
                return True
            self.waiting += 1
            self._lock.wait_for(lambda: self.state != "unknown" or self.probing == 0)
            self.waiting -= 1
            return False

    def probe_done(self) -> None:
        with self._lock:
            self.probing -= 1
            self._lock.notify_all()


_forms: dict[str, ChatForm] = {}
_forms_lock = threading.Lock()


def shared_chat_form(origin: str) -> ChatForm:
    """The one `ChatForm` of this process for a server origin."""
    with _forms_lock:
        return _forms.setdefault(origin, ChatForm())


class _Foreign(Exception):
    """The answer holds a link of a contact that was not asked for."""


def contact_of(link: Mapping[str, Any]) -> int | None:
    try:
        return int(link.get("contact_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class ChatReader:
    """Reads the links of contacts (`by_contacts`) or chats (`by_chats`) through `get`."""

    def __init__(self, get: Get, form: ChatForm) -> None:
        self.get, self.form = get, form

    def by_chats(self, chat_ids: list[str]) -> list[dict[str, Any]]:
        """The links of chats, one documented `chat_id=<uuid>` request each."""
        links: list[dict[str, Any]] = []
        for chat in dict.fromkeys(chat_ids):
            links += [x for x in self._read({"chat_id": chat})[0] if str(x.get("chat_id")) == chat]
        return links

    def by_contacts(self, ids: list[int]) -> list[dict[str, Any]]:
        """Every link of the contacts `ids` (≤ 250 of them), however the server reads the form."""
        ids = list(dict.fromkeys(ids))
        if len(ids) <= 1 or self.form.scalar:
            return [x for cid in ids for x in self._one(cid)]
        try:
            links, cut = self._read({"contact_id": ids}, wanted=set(ids))
        except AmoError as exc:
            if not _refusal(exc):
                raise
            self.form.to_scalar(f"amoCRM answered the contact_id[] form with {exc.status}", 250)
            return self.by_contacts(ids)
        except _Foreign:
            why = "amoCRM answered the contact_id[] form with links of contacts not asked for"
            self.form.to_scalar(why, 250)
            return self.by_contacts(ids)
        if cut:
            half = len(ids) // 2
            log.info("amo_chats_answer_cut", contacts=len(ids))
            return self.by_contacts(ids[:half]) + self.by_contacts(ids[half:])
        linked = {contact_of(x) for x in links}
        if len(linked) >= 2:
            self.form.confirm()
            return links
        return self._verified(ids, links, linked)

    def _verified(
        self, ids: list[int], links: list[dict[str, Any]], linked: set[int | None]
    ) -> list[dict[str, Any]]:
        """An unproven batch answer checked contact by contact while probes are left."""
        for cid in ids:
            if cid in linked:
                continue
            if not self.form.take_probe():
                break
            try:
                found = self._one(cid)
            finally:
                self.form.probe_done()
            if found:
                why = "amoCRM's contact_id[] answer left out links the contact_id=N form lists"
                self.form.to_scalar(why, 250)
                break
        if self.form.scalar:  # found here, or by a probe of a batch checked beside this one
            return self.by_contacts(ids)
        return links

    def _one(self, contact_id: int) -> list[dict[str, Any]]:
        """One contact's links, in the documented form (a foreign link is dropped: the filter
        itself is ignored then, and nothing better can be asked)."""
        links, cut = self._read({"contact_id": contact_id})
        if cut:
            log.warning("amo_chats_answer_cut", contacts=1, contact_id=contact_id)
        return [x for x in links if contact_of(x) == contact_id]

    def _read(
        self, params: dict[str, Any], wanted: set[int] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every page of one answer, and whether it looks cut (links may be missing). Raises
        `_Foreign` at the first link of a contact outside `wanted`."""
        links: list[dict[str, Any]] = []
        seen: set[tuple[Any, Any]] = set()
        total: int | None = None
        number = 1
        while True:
            query = params if number == 1 else {**params, "page": number}
            data = self.get(CHATS, query).data
            items = _items(data)
            if wanted is not None and any(contact_of(x) not in wanted for x in items):
                raise _Foreign
            fresh = [x for x in items if (x.get("contact_id"), x.get("chat_id")) not in seen]
            seen.update((x.get("contact_id"), x.get("chat_id")) for x in fresh)
            links += fresh
            total = _total(data) if number == 1 else total
            more = _has_next(data)
            if more and fresh and number < MAX_PAGES:
                number += 1
                continue
            capped = not more and number == 1 and len(items) >= LINKS_CAP
            short = total is not None and total > len(links)
            return links, more or capped or short


def _refusal(exc: AmoError) -> bool:
    """A 4xx about the request itself (not auth, payment, an IP block or the rate)."""
    if isinstance(exc, AmoTransientError | AmoAuthError | AmoBlockedError | AmoPaymentError):
        return False
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in NOT_REFUSALS


def _items(data: Any) -> list[dict[str, Any]]:
    embedded = data.get("_embedded") if isinstance(data, Mapping) else None
    chats = embedded.get("chats") if isinstance(embedded, Mapping) else None
    return [x for x in chats if isinstance(x, dict)] if isinstance(chats, list) else []


def _total(data: Any) -> int | None:
    total = data.get("_total_items") if isinstance(data, Mapping) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def _has_next(data: Any) -> bool:
    links = data.get("_links") if isinstance(data, Mapping) else None
    nxt = links.get("next") if isinstance(links, Mapping) else None
    return isinstance(nxt, Mapping) and bool(nxt.get("href"))


def parse_links(batch: Sequence[Item], data: Any) -> list[WriteResult]:
    """A link POST's answer matched to its batch: by our `request_id` when the server echoes
    it, else by the `(contact_id, chat_id)` pair (a stand-in may number its answers itself, as
    the vendor's example "request_id": "0" does). An entry matching nothing is ignored; an item
    no entry names is left out, for the caller to read back (`find_linked`)."""
    by_rid = {item.request_id: item for item in batch}
    by_pair = {_pair(item.payload): item for item in batch}
    results: dict[str, WriteResult] = {}
    for answer in _items(data):
        item = by_rid.get(str(answer.get("request_id")))
        if item is None or _pair(answer) != _pair(item.payload):
            item = by_pair.get(_pair(answer))
        if item is not None and item.request_id not in results and answer.get("id") is not None:
            results[item.request_id] = to_result(item.request_id, answer)
    return [results[i.request_id] for i in batch if i.request_id in results]


def _pair(entry: Mapping[str, Any]) -> tuple[int | None, str]:
    return contact_of(entry), str(entry.get("chat_id"))
