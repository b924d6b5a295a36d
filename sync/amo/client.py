"""`AmoClient`: the amoCRM API as pull and push use it — list iterators, fetches and writes.

    client = AmoClient.connect(config.amocrm, token_storage=TokenStore(engine, schema))
    pages = client.iter_contacts(filters={"updated_at": {"from": t0}}, order=("updated_at", "asc"))
    for page in pages:
        store(page.items)            # one transaction per page
    results = client.update_contacts([{"id": 5, "name": "New"}])

Thread-safe: share one client between the threads of a pool. Every client for one origin shares
the process's rate budget (`shared_limiter`); with a `budget` store (`BudgetRow`), every process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from sync.amo.auth import TokenProvider, TokenStorage, tokens_for
from sync.amo.backoff import Backoff, pause
from sync.amo.budget import BudgetStore
from sync.amo.chats import CHATS, ChatForm, ChatReader, parse_links, shared_chat_form
from sync.amo.created import Sent
from sync.amo.hooks import WEBHOOKS, Webhook, parse_webhook, parse_webhooks
from sync.amo.limiters import shared_limiter
from sync.amo.numbers import normalise
from sync.amo.pages import MAX_LIMIT, Page, iter_pages
from sync.amo.ratelimit import RateLimiter
from sync.amo.reconcile import find_created, find_linked, find_updated, newest_contact_id
from sync.amo.session import AmoSession, Reply
from sync.amo.writes import Item, WriteResult, parse_results, prepare, run_writes
from sync.clock import Clock
from sync.config import AmoCrmConfig
from sync.errors import AmoError, InvariantError

CONTACTS = "/api/v4/contacts"
EVENTS = "/api/v4/events"
CUSTOM_FIELDS = "/api/v4/contacts/custom_fields"
ACCOUNT = "/api/v4/account"
W = list[WriteResult]
IDS_PER_REQUEST = 250  # amoCRM's page maximum; literal brackets keep the URL near 6 KB


class AmoClient:
    """All HTTP to amoCRM. Build with `connect` (from config) or pass the parts in tests."""

    def __init__(
        self,
        config: AmoCrmConfig,
        tokens: TokenProvider | None,
        *,
        limiter: RateLimiter | None = None,
        budget: BudgetStore | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
        workers: int = 4,
        reconcile_settle_s: float = 1.0,
        chat_form: ChatForm | None = None,
    ) -> None:
        origin = _origin(config.base_url)
        self.config = config
        self.session = AmoSession(
            config,
            tokens,
            limiter or shared_limiter(origin, config.max_rps, store=budget),
            clock=clock,
            backoff=backoff,
            transport=transport,
        )
        self.workers, self.reconcile_settle_s = max(1, workers), reconcile_settle_s
        self.own_user: int | None = None  # the token's user, once read (`reconcile.own_user_id`)
        self.chats = ChatReader(self.get, chat_form or shared_chat_form(origin))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        config: AmoCrmConfig,
        *,
        token_storage: TokenStorage | None = None,
        clock: Clock | None = None,
        **kw: Any,
    ) -> AmoClient:
        """A client authenticated the configured way: a long-lived token, or stored OAuth tokens."""
        client = cls(config, None, clock=clock, **kw)
        exchange = client.session.exchange_token
        client.session.tokens = tokens_for(config, token_storage, exchange, clock)
        return client

    def __repr__(self) -> str:
        return f"AmoClient(base_url={self.config.base_url!r})"

    def __enter__(self) -> AmoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.session.close()
        self.session.limiter.close()  # its store's connection; another opens when needed

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The client's small thread pool (page prefetch); created on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="amo")
            return self._pool

    # --- raw access ----------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Reply:
        """GET with retries; `Reply.data` is None for 204 No Content; ints made ints (`numbers`)."""
        reply = self.session.send("GET", path, params=params)
        normalise(path, reply.data)
        return reply

    def iter_pages(
        self,
        path: str,
        key: str,
        params: Mapping[str, Any] | None = None,
        *,
        prefetch: int = 1,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """Pages of any list endpoint; see `sync.amo.pages`."""
        size = limit or self.config.page_size
        return iter_pages(
            self.get,
            path,
            key,
            params,
            limit=size,
            prefetch=min(prefetch, self.workers),
            pool=self.pool if prefetch > 1 else None,
        )

    # --- reads ---------------------------------------------------------------------------------

    def iter_contacts(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order: tuple[str, str] | None = None,
        with_: Sequence[str] = (),
        query: str | None = None,
        prefetch: int = 1,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """`GET /api/v4/contacts` page by page. Filters may be silently ignored by amoCRM:
        check them on the items. `order` is one `(field, "asc"|"desc")`."""
        params: dict[str, Any] = {"filter": filters or None, "query": query}
        if with_:
            params["with"] = list(with_)
        if order is not None:
            params["order"] = {order[0]: order[1]}
        return self.iter_pages(CONTACTS, "contacts", params, prefetch=prefetch, limit=limit)

    def iter_events(
        self,
        *,
        types: Sequence[str] = (),
        entity: str | None = "contact",
        filters: Mapping[str, Any] | None = None,
        prefetch: int = 1,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """`GET /api/v4/events` (e.g. `types=["contact_deleted", "contact_restored"]`,
        `filters={"created_at": {"from": t0, "to": t1}}`)."""
        merged: dict[str, Any] = dict(filters or {})
        if types:
            merged["type"] = list(types)
        if entity:
            merged["entity"] = [entity]
        return self.iter_pages(
            EVENTS, "events", {"filter": merged or None}, prefetch=prefetch, limit=limit
        )

    def iter_custom_fields(self, *, limit: int | None = None) -> Iterator[Page]:
        """`GET /api/v4/contacts/custom_fields`, every page."""
        return self.iter_pages(CUSTOM_FIELDS, "custom_fields", limit=limit)

    def iter_chats(
        self, *, contact_ids: Iterable[int] = (), chat_ids: Iterable[str] = ()
    ) -> Iterator[Page]:
        """Chat links of the given contacts (or chats), a page per ≤250 ids (`sync.amo.chats`
        picks the query form the server honours; the endpoint itself is not paginated)."""
        contacts, chats = [int(i) for i in contact_ids], [str(c) for c in chat_ids]
        if contacts and chats:
            raise ValueError("pass contact_ids or chat_ids, not both")
        ids: list[Any] = contacts or chats
        for number, start in enumerate(range(0, len(ids), IDS_PER_REQUEST), 1):
            chunk = ids[start : start + IDS_PER_REQUEST]
            links = self.chats.by_contacts(chunk) if contacts else self.chats.by_chats(chunk)
            yield Page(number, links, start + IDS_PER_REQUEST < len(ids))

    def fetch_contacts_by_ids(
        self, ids: Iterable[int], *, with_: Sequence[str] = ()
    ) -> dict[int, dict[str, Any]]:
        """Contacts by id (`filter[id][]`, ≤250 per request); ids not found are absent.

        If amoCRM ignores the filter (it answers with other contacts), the missing ids are read
        one by one, so the answer is right either way.
        """
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            chunk = wanted[start : start + IDS_PER_REQUEST]
            found.update(self._fetch_chunk(chunk, with_))
        return found

    def _fetch_chunk(self, chunk: list[int], with_: Sequence[str]) -> dict[int, dict[str, Any]]:
        params: dict[str, Any] = {"filter": {"id": chunk}, "limit": MAX_LIMIT}
        if with_:
            params["with"] = list(with_)
        reply = self.get(CONTACTS, params)
        items = (reply.data or {}).get("_embedded", {}).get("contacts", []) if reply.data else []
        wanted = set(chunk)
        found = {int(c["id"]): c for c in items if int(c.get("id", 0)) in wanted}
        if any(int(c.get("id", 0)) not in wanted for c in items):
            for missing in wanted - found.keys():  # the filter was ignored: ask one by one
                contact = self.fetch_contact(missing, with_=with_)
                if contact is not None:
                    found[missing] = contact
        return found

    def fetch_contact(self, contact_id: int, *, with_: Sequence[str] = ()) -> dict[str, Any] | None:
        """One contact, or None when amoCRM has no such live contact: 204, as the contacts
        reference documents, or 404, which clients in the wild also get (amocrm-api.md §7)."""
        params = {"with": list(with_)} if with_ else None
        try:
            reply = self.get(f"{CONTACTS}/{int(contact_id)}", params)
        except AmoError as exc:
            if exc.status == 404:
                return None
            raise
        return reply.data if isinstance(reply.data, dict) else None

    def fetch_account(self, *, with_: Sequence[str] = ()) -> dict[str, Any]:
        """`GET /api/v4/account` (e.g. `with_=["is_api_filter_enabled", "amojo_id"]`)."""
        reply = self.get(ACCOUNT, {"with": list(with_)} if with_ else None)
        if not isinstance(reply.data, dict):
            raise InvariantError("amoCRM answered /api/v4/account without an account")
        return reply.data

    # --- webhooks ------------------------------------------------------------------------------

    def list_webhooks(self, *, destination: str | None = None) -> list[Webhook]:
        """`GET /api/v4/webhooks`, all of them or those posting to `destination` (exact)."""
        params = {"filter": {"destination": destination}} if destination else None
        return parse_webhooks(self.get(WEBHOOKS, params).data)

    def subscribe_webhook(
        self, destination: str, settings: Sequence[str], *, sort: int | None = None
    ) -> Webhook:
        """`POST /api/v4/webhooks`. Retried like a read: a subscription is a whole state (the
        emulator keeps one hook per destination; amoCRM does not document a repeated one)."""
        body: dict[str, Any] = {"destination": destination, "settings": list(settings)}
        if sort is not None:
            body["sort"] = sort
        return parse_webhook(self.session.send("POST", WEBHOOKS, json=body).data)

    def unsubscribe_webhook(self, destination: str) -> bool:
        """`DELETE /api/v4/webhooks`; False when no hook posts to `destination` (404)."""
        try:
            self.session.send("DELETE", WEBHOOKS, json={"destination": destination})
        except AmoError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- writes --------------------------------------------------------------------------------

    def update_contacts(
        self, entities: Sequence[Mapping[str, Any]], *, batch_size: int | None = None,
        planned_at: Mapping[int, int] | None = None,
    ) -> list[WriteResult]:  # fmt: skip
        """PATCH contacts (each needs `id`; only changed writable fields). `planned_at`: each
        one's `updated_at` planned on (a lost answer never resends over a newer edit)."""
        for entity in entities:
            if "id" not in entity:
                raise ValueError("every contact to update needs an id")
        return self._write(
            prepare(entities),
            batch_size,
            lambda b: self._send("PATCH", CONTACTS, "contacts", b),
            lambda b: find_updated(self, b, planned_at),
            "contacts updated",
        )

    def create_contacts(
        self,
        entities: Sequence[Mapping[str, Any]],
        *,
        batch_size: int | None = None,
        hold_unseen: bool = False,
    ) -> list[WriteResult]:
        """POST new contacts; a lost answer is reconciled first: a contact still invisible a
        confirmation window later (`find_created`) is resent, or with `hold_unseen` held
        (`AmoWriteUnconfirmedError.held`: a list may lag longer than the window); when amoCRM
        cannot be searched, none is resent (`AmoWriteUnconfirmedError`)."""
        if not (items := prepare(entities)):
            return []
        sent = Sent(self.session.clock.now())  # without a floor: looked for from this moment
        floor = newest_contact_id(self)  # everything above it was created after this call began
        claimed: set[int] = set()

        def send(batch: list[Item]) -> list[WriteResult]:
            results = self._send("POST", CONTACTS, "contacts", batch)
            claimed.update(r.id for r in results)
            return results

        def reconcile(batch: list[Item]) -> dict[str, WriteResult]:
            return find_created(self, batch, floor, claimed, self.reconcile_settle_s, sent=sent)

        return self._write(
            items, batch_size, send, reconcile, "contacts created", blind=False, hold=hold_unseen
        )

    def link_chats(
        self, links: Sequence[Mapping[str, Any]], *, batch_size: int | None = None
    ) -> list[WriteResult]:
        """POST `{contact_id, chat_id}` links; `WriteResult.id` is the link id."""
        return self._write(
            prepare(links),
            batch_size,
            self._post_links,
            lambda b: find_linked(self, b),
            "chats linked",
        )

    # --- recovery of a dead process's writes ----------------------------------------------------

    def newest_contact_id(self) -> int | None:
        """The largest contact id now (`recover_creates` looks above it); None: order ignored."""
        return newest_contact_id(self)

    def recover_creates(
        self, entities: Sequence[Mapping[str, Any]], floor: int | None, claimed: Iterable[int] = (),
        sent: Sent | None = None,
    ) -> dict[str, WriteResult]:  # fmt: skip
        """Which of `entities` (POSTed, each with its `request_id`, by a process that died before
        it stored the answer) amoCRM shows now (one look), by request_id: above `floor`
        (`newest_contact_id` before the POST) or, with none, made around `sent`
        (`filter[created_at]`), not `claimed` (made for others). `InvariantError` when amoCRM
        cannot be searched so: resending could create duplicates."""
        return find_created(self, prepare(entities), floor, {*claimed}, settle_s=0.0, sent=sent)

    def recover_links(self, links: Sequence[Mapping[str, Any]]) -> dict[str, WriteResult]:
        """Which of `links` (`{contact_id, chat_id, request_id}` POSTed by a process that died
        before it stored the answer) exist in amoCRM, by request_id."""
        return find_linked(self, prepare(links))

    def _post_links(self, batch: list[Item]) -> list[WriteResult]:
        """POST links, matched by `request_id` or pair (`sync.amo.chats`); those the answer does
        not name are looked up by `run_writes` (`find_linked`), like any unmatched entity."""
        reply = self.session.send("POST", CHATS, json=[i.payload for i in batch], write=True)
        return parse_links(batch, reply.data)

    def _send(self, method: str, path: str, key: str, batch: list[Item]) -> list[WriteResult]:
        reply = self.session.send(method, path, json=[i.payload for i in batch], write=True)
        return parse_results(batch, reply.data, key)

    def _write(
        self, items: list[Item], size: int | None, *parts: Any, blind: bool = True,
        hold: bool = False,
    ) -> W:  # fmt: skip
        session = self.session
        send, reconcile, what = parts

        def wait(attempt: int) -> None:
            pause(session.clock, session.stopping, session.backoff.delay(attempt))

        return run_writes(
            items,
            size or self.config.batch_size,
            send,
            reconcile,
            max_retries=session.max_retries,
            wait=wait,
            what=what,
            blind_resend=blind,
            hold_unseen=hold,
        )


def _origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"
