"""Scheduled and probabilistic faults: which request gets which failure.

A `FaultRule` says what goes wrong (`kind`) and to which requests (method, path glob, page).
Precise tests use `times` and `skip` ("the 2nd and 3rd PATCH get a 504"); soak runs use `rate`
(a probability per matching request) with `times=None`. Rules are checked in the order they were
added and the first one that fires wins, so one request gets at most one fault.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

FaultKind = Literal[
    "error",  # an HTTP error: 500 (problem JSON with trace_id), 502/503/504 (HTML); body="html":
    # any status as an HTML page (403 HTML is amoCRM's IP block)
    "rate_limit",  # a 429 whatever the window says; `body` picks json or html
    "payment_required",  # 402 problem JSON
    "unauthorized",  # 401 problem JSON, as if the token had just expired
    "slow",  # answer normally after `delay_ms` (set it above the client timeout)
    "reset",  # close the connection without a response
    "truncate",  # send the first half of the JSON body, with a matching Content-Length
    "empty_page",  # a 204 for a list page >= `min_page`, though data exists
    "absent",  # a 204 for any matching request, `GET /contacts/{id}` too, though the data exists
    "drift",  # touch `touch` contacts (see `pick`; bump updated_at) before serving a list page
    "edit",  # a user renames `touch` contacts (a real change, with events) before a list page
    "vanish",  # a user deletes `touch` contacts of the list (see `pick`) just before a page
    "revive",  # a user restores `touch` contacts from the trash just before a list page
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]
# which contacts of the request's list drift / edit / vanish hit: the first ones (rows a walk
# has just read), the last ones (rows it has not reached yet), or a seeded random choice
Pick = Literal["first", "last", "random"]
PICKS: tuple[str, ...] = Pick.__args__  # type: ignore[attr-defined]
WALK_KINDS = ("empty_page", "drift", "edit", "vanish", "revive")  # fire on list pages only


@dataclass(frozen=True)
class FaultRule:
    """One fault and the requests it applies to."""

    kind: FaultKind
    method: str | None = None  # e.g. "PATCH"; None = any
    path: str | None = None  # glob on the path without query, e.g. "/api/v4/contacts*"
    min_page: int = 1  # list requests fire only at page >= min_page (empty_page, drift, ...)
    # list requests fire only when ordered by this key ("id": a second read by id; None: any)
    order: str | None = None
    times: int | None = 1  # matching requests that get the fault; None = no limit
    skip: int = 0  # matching requests let through before the first fault
    rate: float = 1.0  # probability for each matching request that is not skipped
    status: int = 500  # for "error"
    apply_write: bool = False  # error/reset: apply the write first, then fail (the 504 trap)
    delay_ms: float = 0.0  # for "slow"
    body: Literal["json", "html"] = "json"  # for "rate_limit", and "error" of any status
    touch: int = 1  # drift / edit / vanish / revive: how many contacts change / go / return
    pick: Pick = "first"  # drift / edit / vanish: which of the list's contacts (see Pick)
    min_batch: int = 0  # writes only fire with at least this many entities (heavy-batch 504s)
    retry_after_s: int = 1  # "rate_limit" with a JSON body: its `retry_after` (the docs show 300)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from admin-API JSON, refusing unknown keys and kinds."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if data.get("pick", "first") not in PICKS:
            raise ValueError(f"fault pick must be one of {', '.join(PICKS)}")
        return cls(**data)

    def matches(
        self,
        method: str,
        path: str,
        page: int | None,
        batch: int | None = None,
        order: str | None = None,
    ) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.order is not None and (page is None or order != self.order):
            return False
        if self.min_batch and (batch or 0) < self.min_batch:
            return False
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        needs_page = self.kind in WALK_KINDS
        return not needs_page or (page is not None and page >= self.min_page)


@dataclass
class _Armed:
    rule: FaultRule
    rule_id: int
    seen: int = 0
    fired: int = 0

    def exhausted(self) -> bool:
        return self.rule.times is not None and self.fired >= self.rule.times

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rule_id, "seen": self.seen, "fired": self.fired, **asdict(self.rule)}


@dataclass
class FaultBook:
    """The armed rules; thread-safe. `pick` consumes a firing of the first rule that fires."""

    seed: int = 0
    _rules: list[_Armed] = field(default_factory=list)
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - simulation, not security

    def add(self, rule: FaultRule) -> int:
        with self._lock:
            rule_id = self._next_id
            self._next_id += 1
            self._rules.append(_Armed(rule, rule_id))
            return rule_id

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [armed for armed in self._rules if armed.rule_id != rule_id]
            return len(self._rules) < before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [armed.to_json() for armed in self._rules]

    def pick(
        self,
        method: str,
        path: str,
        page: int | None,
        batch: int | None = None,
        order: str | None = None,
    ) -> FaultRule | None:
        """The fault this request gets, if any (counting it against the rule's budget)."""
        with self._lock:
            for armed in self._rules:
                if armed.exhausted() or not armed.rule.matches(method, path, page, batch, order):
                    continue
                armed.seen += 1
                if armed.seen <= armed.rule.skip or self._random.random() >= armed.rule.rate:
                    continue
                armed.fired += 1
                return armed.rule
            return None
