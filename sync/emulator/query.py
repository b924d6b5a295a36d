"""`GET /api/v4/contacts` parameters → which contacts, in what order, which page.

Selection walks a cached sorted view and stops as soon as the page (plus one item, to know
whether a next page exists) is filled, so a page costs about page x limit, not the account size.
A date range on the field being ordered by is cut out of the view with bisect; a date range
that holds few contacts under `order[id]` (a second read by id) is cut out of that date's view
and sorted by id.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby, islice
from typing import overload

from sync.emulator.model import Contact
from sync.emulator.params import Query, comma_values, ints_of, values_of
from sync.emulator.store import Account, search_text

ORDER_FIELDS = ("updated_at", "id", "created_at")
Predicate = Callable[[Contact], bool]
# an id-ordered list with a date range holding at most this share of the account sorts that
# range's contacts (cut out of the date's own view) instead of checking every contact
NARROW_SHARE = 8


@dataclass
class Range:
    low: int | None = None  # inclusive, already adjusted for exclusive bounds
    high: int | None = None

    def holds(self, value: int) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass
class ContactQuery:
    ids: list[int] | None = None
    ranges: dict[str, Range] = field(default_factory=dict)  # updated_at / created_at
    names: list[str] | None = None
    users: dict[str, list[int]] = field(default_factory=dict)  # responsible_user_id, ...
    as_of: float | None = None  # lists lag writes: each contact as it was at this clock time
    text: str | None = None
    order_field: str = "id"
    descending: bool = False
    deleted: bool = False


def parse_contacts_query(query: Query, account: Account, filters_enabled: bool) -> ContactQuery:
    q = ContactQuery(deleted="only_deleted" in comma_values(query.get("with")))
    raw_filter = query.get("filter")
    if filters_enabled and isinstance(raw_filter, dict):
        _parse_filter(raw_filter, q, account.settings.inclusive_date_bounds)
    text = query.get("query")
    if isinstance(text, str) and text.strip():
        q.text = text.strip()
    _parse_order(query.get("order"), q)
    return q


def _parse_filter(raw: Query, q: ContactQuery, inclusive: bool) -> None:
    if "id" in raw:
        q.ids = ints_of(raw["id"]) or []  # a non-integer id matches nothing
    for name in ("updated_at", "created_at"):
        if name in raw:
            q.ranges[name] = date_range(raw[name], inclusive)
    if "name" in raw:
        q.names = values_of(raw["name"])
    for name in ("responsible_user_id", "created_by", "updated_by"):
        if name in raw:
            q.users[name] = ints_of(raw[name]) or []


def date_range(raw: object, inclusive: bool) -> Range:
    if isinstance(raw, str):  # a bare `filter[updated_at]=T` is an exact match
        exact = ints_of(raw)
        value = exact[0] if exact else -1
        return Range(value, value)
    bounds = raw if isinstance(raw, dict) else {}
    low, high = _bound(bounds.get("from")), _bound(bounds.get("to"))
    if not inclusive:
        low = None if low is None else low + 1
        high = None if high is None else high - 1
    return Range(low, high)


def _bound(raw: object) -> int | None:
    values = ints_of(raw)
    return values[0] if values else None


def _parse_order(raw: object, q: ContactQuery) -> None:
    if not isinstance(raw, dict):
        return
    for name, direction in raw.items():  # one key is documented; the first one given wins
        if name in ORDER_FIELDS and isinstance(direction, str):
            q.order_field, q.descending = name, direction.lower() == "desc"
            return


def select(
    account: Account, q: ContactQuery, offset: int, limit: int
) -> tuple[list[Contact], bool]:
    """The page's contacts and whether more follow. Call with the account lock held."""
    candidates = _candidates(account, q) if q.as_of is None else _as_of(account, q, q.as_of)
    predicate = _predicate(account, q)
    page: Sequence[Contact]
    if account.settings.tie_break == "reshuffle" and q.order_field != "id":
        chosen = candidates if predicate is None else [c for c in candidates if predicate(c)]
        page = _reshuffled(chosen, offset, limit + 1, q.order_field, account.tie_random)
    elif predicate is None:  # nothing left to check: the page is a plain slice of the view
        page = candidates[offset : offset + limit + 1]
    else:
        page = list(islice(filter(predicate, candidates), offset, offset + limit + 1))
    return list(page[:limit]), len(page) > limit


def _reshuffled(
    chosen: Sequence[Contact], offset: int, count: int, name: str, rng: random.Random
) -> list[Contact]:
    """`chosen[offset:offset + count]` with every run of equal `name` in a new order, drawn for
    this request: the runs cut by the slice's edges are widened to their whole, scrambled, then
    cut, so a tie across a page boundary trades members with the next page between requests."""
    begin, end = offset, min(len(chosen), offset + count)
    if begin >= end:
        return []
    while begin > 0 and getattr(chosen[begin - 1], name) == getattr(chosen[offset], name):
        begin -= 1
    while end < len(chosen) and getattr(chosen[end], name) == getattr(chosen[end - 1], name):
        end += 1
    segment, out = list(chosen[begin:end]), []
    for _, run in groupby(segment, key=lambda c: getattr(c, name)):
        tied = list(run)
        rng.shuffle(tied)
        out.extend(tied)
    return out[offset - begin : offset - begin + count]


def _candidates(account: Account, q: ContactQuery) -> Sequence[Contact]:
    if q.ids is not None:
        found = (account.contacts.get(i) for i in dict.fromkeys(q.ids))
        chosen = [c for c in found if c is not None and c.is_deleted == q.deleted]
        return sorted(chosen, key=account.sort_key(q.order_field, q.descending))
    view = account.view(q.order_field, q.descending, q.deleted)
    span = q.ranges.pop(q.order_field, None)  # the bisect below applies it; no per-row check
    if span is None:
        return _narrowed(account, q, view)
    return _slice(view, span, q.order_field, q.descending)


def _narrowed(account: Account, q: ContactQuery, view: list[Contact]) -> Sequence[Contact]:
    """`order[id]` with a date range that holds few contacts (a second read by id: a tie):
    the range cut out of that date's own view with bisect, in id order, instead of every
    contact of the account checked against it (a walk through 1,000,000 contacts per request).
    The same contacts in the same order: the id order's keys are unique."""
    if q.order_field != "id":
        return view
    for name, span in q.ranges.items():
        by_date = _slice(account.view(name, False, q.deleted), span, name, False)
        if len(by_date) * NARROW_SHARE <= len(view):
            del q.ranges[name]  # the cut applies it; no per-row check
            return sorted(by_date, key=account.sort_key("id", q.descending))
    return view


def _as_of(account: Account, q: ContactQuery, at: float) -> list[Contact]:
    """Every candidate as it was at `at`, in that version's order: filters and order then see
    the old version, as in an index that lags. A full sort per page (lag is for test accounts)."""
    if q.ids is None:
        pool: Iterable[Contact | None] = account.contacts.values()
    else:
        pool = (account.contacts.get(i) for i in dict.fromkeys(q.ids))
    versions = (account.listed(c, at) for c in pool if c is not None)
    chosen = [v for v in versions if v is not None and v.is_deleted == q.deleted]
    return sorted(chosen, key=account.sort_key(q.order_field, q.descending))


def _slice(view: list[Contact], span: Range, name: str, descending: bool) -> Sequence[Contact]:
    sign = -1 if descending else 1
    low, high = span.low, span.high
    if descending:
        low, high = (None if high is None else -high), (None if low is None else -low)

    def key(contact: Contact) -> int:
        return int(sign * getattr(contact, name))

    start = 0 if low is None else bisect_left(view, low, key=key)
    stop = len(view) if high is None else bisect_right(view, high, key=key)
    return _Window(view, start, stop)


class _Window(Sequence[Contact]):
    """view[start:stop] without copying: a 100k-contact view must not be copied per page."""

    def __init__(self, view: list[Contact], start: int, stop: int) -> None:
        self._view, self._start, self._stop = view, start, max(start, stop)

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> Contact: ...
    @overload
    def __getitem__(self, index: slice) -> list[Contact]: ...
    def __getitem__(self, index: int | slice) -> Contact | list[Contact]:
        if isinstance(index, slice):
            begin, end, _ = index.indices(len(self))
            return self._view[self._start + begin : self._start + end]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._view[self._start + index]

    def __iter__(self) -> Iterator[Contact]:
        return islice(self._view, self._start, self._stop)


def _predicate(account: Account, q: ContactQuery) -> Predicate | None:
    checks: list[Predicate] = []
    for name, span in q.ranges.items():
        checks.append(lambda c, n=name, s=span: s.holds(getattr(c, n)))  # type: ignore[misc]
    if q.names is not None:
        wanted = set(q.names)
        checks.append(lambda c: c.name in wanted)
    for name, ids in q.users.items():
        checks.append(lambda c, n=name, i=set(ids): getattr(c, n) in i)  # type: ignore[misc]
    if q.text is not None:
        checks.append(_text_check(account, q.text))
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda c: all(check(c) for check in checks)


def _text_check(account: Account, text: str) -> Predicate:
    needle = text.casefold()
    digits = "".join(ch for ch in text if ch.isdigit())
    use_digits = len(digits) >= 5 and len(digits) >= len(text.replace(" ", "")) - 4

    def check(contact: Contact) -> bool:
        haystack = search_text(contact, account.fields)
        return needle in haystack or (use_digits and digits in haystack)

    return check
