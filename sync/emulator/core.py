"""`Emulator`: the account plus everything around it (auth, rate limit, faults, latency, log).

`handle` is the whole server as a function of one request; the HTTP server and the httpx
transport only translate. The API pipeline, in order: count the arrival for the rate limit
(when its bytes reached the socket, `Request.arrived_at`; 403 when blocked, 429 over the
limit), pick a scheduled fault, check the bearer token, run the endpoint, then let the fault
spoil the answer; latency is returned as `delay_s` for the
transport to wait, so it never holds a lock or delays the rate-limit count.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from sync.emulator import faulting
from sync.emulator.admin import handle_admin
from sync.emulator.auth import OAuthProblem, TokenBook
from sync.emulator.clock import EmulatorClock
from sync.emulator.context import Ctx
from sync.emulator.controls import Controls
from sync.emulator.faults import FaultBook, FaultRule
from sync.emulator.model import Contact
from sync.emulator.patches import ContactPatch
from sync.emulator.problems import ApiProblem, internal_error
from sync.emulator.query import ContactQuery, parse_contacts_query, select
from sync.emulator.quirks import quirks_of
from sync.emulator.ratelimit import RateLimiter
from sync.emulator.reading import (
    batch_size_of,
    form_of,
    is_contacts_list,
    order_of,
    page_of,
    stamped,
    write_body,
)
from sync.emulator.render import contact_json
from sync.emulator.requestlog import LoggedRequest, RequestLog, token_fingerprint
from sync.emulator.routes import dispatch, normalise_path
from sync.emulator.seed import generate
from sync.emulator.settings import EmulatorSettings
from sync.emulator.store import Account
from sync.emulator.webhooks import Webhooks
from sync.emulator.wire import PLAIN_JSON, PROBLEM, Request, Response, json_response
from sync.emulator.writes import parse_entities

_log = logging.getLogger(__name__)
_EDIT_MARK = re.compile(r" ✎\d+$")
UI_USER = 8_000_002  # who "a CRM user" is when tests create, edit or delete through the admin API


class Emulator:
    """A thread-safe emulated amoCRM account with controllable clock, faults and request log."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.clock = EmulatorClock(self.settings.clock_start, frozen=self.settings.clock_frozen)
        self._controls_lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to the seeded account: faults, log, tokens, the block and switches cleared."""
        s = self.settings
        self.account = Account(s, self.clock, generate(s))
        previous = getattr(self, "webhooks", None)
        if previous is not None:
            previous.close()  # its subscriptions and queued hooks go with the old account
        self.webhooks: Webhooks = Webhooks(self.account, self.clock, s.webhooks, seed=s.seed)
        self.account.listeners.append(self.webhooks.on_change)
        self.tokens = TokenBook(s, self.clock)
        self.limiter = RateLimiter(
            s.rate_limit, s.rate_limit_window_s, s.block_after_violations,
            account_limit=s.account_rate_limit, block_window_s=s.block_window_s,
        )  # fmt: skip
        self.fault_book = FaultBook(seed=s.seed)
        self.log = RequestLog()
        self._random = random.Random(s.seed)  # noqa: S311 - jitter, not security
        self._edit_count = 0  # the `edit` fault's names: "<name> ✎N"
        self._pick_random = random.Random(s.seed)  # noqa: S311 - the faults' pick="random"
        self._controls = Controls(s.latency_ms, s.jitter_ms, s.rate_limit, s.rate_limit_body,
                                  s.api_filter_enabled, s.block_after_violations,
                                  s.list_lag_s, s.block_window_s, s.account_rate_limit,
                                  s.token_max_requests, chats_scalar_only=s.chats_scalar_only,
                                  chats_array_ignored=s.chats_array_ignored,
                                  chats_array_empty=s.chats_array_empty,
                                  chats_page_limit=s.chats_page_limit,
                                  arrival_delay_ms=s.arrival_delay_ms)  # fmt: skip
        self._arrival_random = random.Random(s.seed + 1)  # noqa: S311 - delay, not security

    # --- the server as a function -----------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator"):
            return stamped(handle_admin(self, request))
        delay = self._arrival_delay()
        if delay:
            time.sleep(delay)  # still on its way: the server has not seen it yet
        now, clock_at, seq = time.time(), self.clock.now(), self.log.next_seq()
        stamp = request.arrived_at
        arrived_at = now if stamp is None else min(stamp + delay, now)
        response, fault = self._serve(request, time.monotonic() - (now - arrived_at))
        self.log.add(LoggedRequest(
            seq, arrived_at, clock_at, request.client, request.method, request.path,
            request.query_string, 0 if response.reset else response.status, fault,
            write_body(request), token_fingerprint(request.header("authorization")),
        ))  # fmt: skip
        return stamped(response)

    def _serve(self, request: Request, arrived: float) -> tuple[Response, str | None]:
        controls = self.controls()
        verdict = self.limiter.arrive(request.client, at=arrived)
        if verdict != "ok":
            body = controls.rate_limit_body
            return faulting.refusal(verdict, body, self.settings.retry_after_s), None
        path = normalise_path(request.path)
        rule = self.fault_book.pick(
            request.method, path, page_of(request), batch_size_of(request), order_of(request)
        )
        response = self._faulted(request, rule) if rule else self._answer(request)
        response.delay_s += self._latency(controls)
        return response, rule.kind if rule else None

    def _faulted(self, request: Request, rule: FaultRule) -> Response:
        early = faulting.early_response(rule, request)
        if early is not None:
            return early
        if rule.kind in ("drift", "edit", "vanish") and is_contacts_list(request):
            self._drift(request, rule)
        if rule.kind == "revive" and is_contacts_list(request):
            self._revive(rule.touch)
        return faulting.spoil(rule, request, self._answer(request))

    def _answer(self, request: Request) -> Response:
        try:
            if normalise_path(request.path) == "/oauth2/access_token":
                return self._token_endpoint(request)
            limit = self.controls().token_max_requests
            if not self.tokens.accepts(request.header("authorization"), max_requests=limit):
                raise ApiProblem(401, "Invalid user name or password")
            return dispatch(self._context(request))
        except ApiProblem as problem:
            return json_response(problem.status, problem.body, PROBLEM)
        except Exception:  # noqa: BLE001 - an emulator bug must still answer like amoCRM's 500
            trace_id = secrets.token_hex(8)
            _log.exception("emulator_request_crashed trace_id=%s %s %s", trace_id,
                           request.method, request.path)  # fmt: skip
            return json_response(500, internal_error(trace_id), PROBLEM)

    def _token_endpoint(self, request: Request) -> Response:
        if request.method != "POST":
            raise ApiProblem(405, "Method Not Allowed")
        try:
            return json_response(200, self.tokens.grant(form_of(request)), PLAIN_JSON)
        except OAuthProblem as problem:
            return json_response(problem.status, problem.body, PROBLEM)

    def _context(self, request: Request) -> Ctx:
        base = self.settings.public_base_url or f"http://{request.header('host') or 'localhost'}"
        controls = self.controls()
        return Ctx(
            request, self.account, self.clock, base, controls.api_filter_enabled,
            controls.list_lag_s, self.webhooks, controls.next_on_full_page,
            controls.empty_list_as_200, controls.never_next, controls, quirks_of(controls),
        )  # fmt: skip

    def _arrival_delay(self) -> float:
        """A one-way network delay (`arrival_delay_ms`): the spread a client's margin covers."""
        most = self.controls().arrival_delay_ms
        return self._arrival_random.uniform(0, most) / 1000 if most > 0 else 0.0

    def _latency(self, controls: Controls) -> float:
        jitter = self._random.uniform(0, controls.jitter_ms) if controls.jitter_ms else 0.0
        return (controls.latency_ms + jitter) / 1000

    def _drift(self, request: Request, rule: FaultRule) -> None:
        """A user saves (drift), renames (edit) or deletes (vanish) `rule.touch` live contacts
        of this request's list, in its order and filters, just before the page is served: with
        `pick="first"` rows the client has just read move ahead of it or go, so a page-number
        walk skips others (amoCRM's unstable paging); "last" and "random" hit rows it has not
        reached. A trash scan (`with=only_deleted`) picks from the live list the same way."""
        with self.account.lock:
            q = parse_contacts_query(
                request.query, self.account, self.controls().api_filter_enabled
            )
            q.deleted = False
            now = self.clock.now_s()
            for contact in self._picked(q, rule):
                if rule.kind == "vanish":
                    self.account.trash(contact, now, UI_USER)
                elif rule.kind == "edit":
                    self._edit_count += 1
                    name = f"{_EDIT_MARK.sub('', contact.name)} ✎{self._edit_count}"
                    patch = ContactPatch("edit", contact.id, scalars={"name": name})
                    self.account.update(patch, now, UI_USER)
                else:
                    self.account.touch(contact, now, UI_USER)

    def _picked(self, q: ContactQuery, rule: FaultRule) -> list[Contact]:
        if rule.pick == "first":
            return select(self.account, q, 0, rule.touch)[0]
        every, _ = select(self.account, q, 0, len(self.account.contacts))
        if rule.pick == "last":
            return every[max(0, len(every) - rule.touch) :]
        return self._pick_random.sample(every, min(rule.touch, len(every)))

    def _revive(self, count: int) -> None:
        """Restore the `count` lowest-id contacts in the trash (they shift later ones along)."""
        with self.account.lock:
            trashed = sorted(c.id for c in self.account.contacts.values() if c.is_deleted)
            now = self.clock.now_s()
            for contact_id in trashed[:count]:
                self.account.restore(self.account.contacts[contact_id], now, UI_USER)

    # --- switches ---------------------------------------------------------------------------

    def controls(self) -> Controls:
        with self._controls_lock:
            return self._controls

    def set_controls(self, **changes: Any) -> Controls:
        """Change runtime switches: latency_ms, jitter_ms, rate_limit, rate_limit_body,
        api_filter_enabled, block_after_violations, list_lag_s, block_window_s,
        account_rate_limit, token_max_requests, next_on_full_page, empty_list_as_200,
        never_next, chats_scalar_only, chats_array_ignored, chats_array_empty, chats_page_limit,
        events_order, next_gaps, write_answer, string_numbers, enum_key, id_order_ignored,
        arrival_delay_ms. A
        rate limit of 0 is off, as on the command line (`--rate-limit 0`), not a budget of
        nothing."""
        for key in ("rate_limit", "account_rate_limit"):
            if key in changes and changes[key] == 0:
                changes[key] = None
        with self._controls_lock:
            changed = replace(self._controls, **changes)
            quirks_of(changed)  # ValueError on an unknown mode
            self._controls = changed
            self.limiter.limit = self._controls.rate_limit
            self.limiter.block_after = self._controls.block_after_violations
            self.limiter.block_window_s = self._controls.block_window_s
            self.limiter.account_limit = self._controls.account_rate_limit
            return self._controls

    def unblock(self) -> None:
        self.limiter.unblock()

    # --- faults ------------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> int:
        return self.fault_book.add(rule)

    def remove_fault(self, rule_id: int) -> bool:
        return self.fault_book.remove(rule_id)

    def clear_faults(self) -> None:
        self.fault_book.clear()

    def faults(self) -> list[dict[str, Any]]:
        return self.fault_book.list()

    # --- auth ---------------------------------------------------------------------------------

    @property
    def long_lived_token(self) -> str:
        return self.tokens.long_lived_token

    def issue_auth_code(self) -> str:
        return self.tokens.issue_code()

    def issue_tokens(self) -> dict[str, Any]:
        return self.tokens.issue_pair()

    def expire_access_tokens(self) -> None:
        self.tokens.expire_access()

    def revoke_all_tokens(self) -> None:
        self.tokens.revoke_all()

    # --- the request log ----------------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        return self.log.entries()

    def clear_requests(self) -> None:
        self.log.clear()

    # --- what a CRM user does in the UI ---------------------------------------------------------

    def create_contacts(self, items: list[dict[str, Any]]) -> list[int]:
        """Create contacts (API write shape); raises ApiProblem on invalid input."""
        with self.account.lock:
            patches = parse_entities(items, self.account, update=False)
            now = self.clock.now_s()
            return [self.account.create(p, now, UI_USER).id for p in patches]

    def update_contacts(self, items: list[dict[str, Any]], at: int | None = None) -> int:
        """A bulk edit of any size: every contact gets the same `updated_at` second (the
        clock's, read once, or `at` when given, past or future; the clock is not moved), which
        is returned."""
        with self.account.lock:
            patches = parse_entities(items, self.account, update=True)
            now = self.clock.now_s() if at is None else _second(at)
            for patch in patches:
                self.account.update(patch, now, UI_USER)
            return now

    def delete_contact(self, contact_id: int, *, event: bool = True) -> None:
        """Move to the trash, as a user deleting in the UI (the API cannot). `event=False`
        logs no `contact_deleted` (the contact vanishes from lists and by-id reads unexplained,
        as a broken listing would show it)."""
        with self.account.lock:
            contact = self.account.live(contact_id)
            if contact is None:
                raise LookupError(f"no live contact {contact_id}")
            self.account.trash(contact, self.clock.now_s(), UI_USER, logged=event)

    def restore_contact(self, contact_id: int) -> None:
        with self.account.lock:
            contact = self.account.contacts.get(contact_id)
            if contact is None or not contact.is_deleted:
                raise LookupError(f"no contact {contact_id} in the trash")
            self.account.restore(contact, self.clock.now_s(), UI_USER)

    def touch_contacts(
        self, ids: list[int] | None = None, count: int | None = None, at: int | None = None
    ) -> list[int]:
        """Bump `updated_at` of the given contacts, or of the `count` least recently updated,
        all to one second: the clock's, or `at` when given."""
        with self.account.lock:
            if ids is None:
                ids = [c.id for c in self.account.view("updated_at", False, False)[: count or 0]]
            contacts = [self.account.live(i) for i in ids]
            if any(c is None for c in contacts):
                raise LookupError("some ids are not live contacts")
            now = self.clock.now_s() if at is None else _second(at)
            for contact in contacts:
                assert contact is not None
                self.account.touch(contact, now, UI_USER)
            return ids

    def link_chat(self, contact_id: int, chat_id: str) -> dict[str, Any]:
        with self.account.lock:
            if self.account.live(contact_id) is None:
                raise LookupError(f"no live contact {contact_id}")
            return asdict(self.account.link_chat(contact_id, chat_id))

    def contact(self, contact_id: int, base: str = "http://localhost") -> dict[str, Any] | None:
        """The contact as the API renders it with every `with` (a trash stub when deleted)."""
        with self.account.lock:
            contact = self.account.contacts.get(contact_id)
            if contact is None:
                return None
            return contact_json(
                contact, self.account, base, {"leads", "customers", "catalog_elements"}
            )

    def contacts(
        self, deleted: bool | None = None, base: str = "http://localhost"
    ) -> list[dict[str, Any]]:
        """Every contact in id order as `contact()` renders it, the trash included (`deleted`:
        only the trash, or only live contacts); what a test compares a database with."""
        with self.account.lock:
            chosen = [c for c in self.account.contacts.values()
                      if deleted is None or c.is_deleted == deleted]  # fmt: skip
            every = {"leads", "customers", "catalog_elements"}
            return [
                contact_json(c, self.account, base, every)
                for c in sorted(chosen, key=lambda c: c.id)
            ]

    def chat_links(self) -> list[dict[str, Any]]:
        """Every contact-chat link in link-id order, those of contacts in the trash too (the
        API's `/contacts/chats` hides them)."""
        with self.account.lock:
            links = sorted(self.account.chat_links.values(), key=lambda link: link.id)
            return [asdict(link) for link in links]

    def state(self) -> dict[str, Any]:
        with self.account.lock:
            live = sum(1 for c in self.account.contacts.values() if not c.is_deleted)
            total, events = len(self.account.contacts), len(self.account.events)
        return {"contacts": live, "trash": total - live, "events": events,
                "clock": self.clock.state(), "controls": asdict(self.controls()),
                "rate_limit": self.limiter.state(), "faults": self.faults()}  # fmt: skip


def _second(at: object) -> int:
    """An explicit `updated_at` for a bulk edit: whole unix seconds."""
    if isinstance(at, bool) or not isinstance(at, int):
        raise ValueError(f"updated_at must be whole unix seconds, got {at!r}")
    return at
