"""What an API handler needs besides the request: the account, the clock, links, switches."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from sync.emulator.clock import EmulatorClock
from sync.emulator.params import int_param
from sync.emulator.problems import ApiProblem
from sync.emulator.quirks import Quirks, announces_next
from sync.emulator.store import Account
from sync.emulator.wire import BadJson, Request, Response, json_response, no_content

T = TypeVar("T")
API_USER = 8_000_001  # the admin whose token the API calls act as


@dataclass
class Ctx:
    request: Request
    account: Account
    clock: EmulatorClock
    base: str  # absolute scheme://host[:port] for _links
    filters_enabled: bool
    list_lag_s: float = 0.0
    webhooks: Any = None  # the account's `Webhooks` (for /api/v4/webhooks)
    next_on_full_page: bool = False  # `_links.next` on a full last page too
    empty_list_as_200: bool = False  # an empty list answered 200 with `_embedded.<key>: []`
    never_next: bool = False  # no `_links.next` at all (a stand-in that leaves it out)
    controls: Any = None  # the emulator's `Controls` (the /contacts/chats stand-ins)
    quirks: Quirks = field(default_factory=Quirks)  # `sync.emulator.quirks`

    def body(self) -> Any:
        """The parsed JSON body (None when empty); 400 problem when it is not JSON."""
        try:
            return self.request.json()
        except BadJson as exc:
            raise ApiProblem(400, "Request body is not valid JSON") from exc

    def page_and_limit(self, default: int, maximum: int) -> tuple[int, int]:
        """`page` (1-based: 0 or less is a 400) and `limit`; a limit above `maximum` is not an
        error: the list silently falls back to `default` per page (fact sheet §16)."""
        page = int_param(self.request.query, "page", 1)
        limit = int_param(self.request.query, "limit", default)
        if page is None or limit is None:
            raise ApiProblem(400, "page and limit must be integers")
        if page < 1:
            raise ApiProblem(400, f"page must be 1 or more (pages are numbered from 1), got {page}")
        return page, default if limit > maximum else max(limit, 1)

    def paged(
        self,
        key: str,
        items: Sequence[T],
        render: Callable[[T], dict[str, Any]],
        *,
        limits: tuple[int, int] = (50, 250),
        counted: bool = False,
    ) -> Response:
        """One page of `items` under `_embedded[key]`, 204 when empty; `counted` adds amoCRM's
        `_total_items`/`_page_count` (custom fields and users have them, contacts do not)."""
        page, limit = self.page_and_limit(*limits)
        chunk = items[(page - 1) * limit : page * limit]
        head: dict[str, Any] = {}
        if counted:
            head = {"_total_items": len(items), "_page_count": math.ceil(len(items) / limit)}
        rendered = [render(item) for item in chunk]
        return self.page_answer(
            key, page, limit, rendered, has_next=page * limit < len(items), head=head
        )

    def page_answer(
        self,
        key: str,
        page: int,
        limit: int,
        items: list[dict[str, Any]],
        *,
        has_next: bool,
        head: dict[str, Any] | None = None,
    ) -> Response:
        """A list page: 204 when empty, as amoCRM documents (200 with an empty list under
        `empty_list_as_200`); `next` when more follows (or, under `next_on_full_page`, whenever
        the page is full: a server that does not look ahead; never under `never_next`, nor on
        an even page under `next_gaps`)."""
        if not items and not self.empty_list_as_200:
            return no_content()
        more = has_next or (self.next_on_full_page and len(items) == limit)
        more = announces_next(more, page, self.quirks) and not self.never_next
        body: dict[str, Any] = {"_page": page, **(head or {})}
        body["_links"] = self.page_links(page, limit, more)
        body["_embedded"] = {key: items}
        return json_response(200, body)

    def page_links(self, page: int, limit: int, has_next: bool) -> dict[str, dict[str, str]]:
        """Absolute self/next/prev hrefs that keep every other query parameter."""
        kept = [
            (k, v) for k, v in parse_qsl(self.request.query_string, keep_blank_values=True)
            if k not in ("page", "limit")
        ]  # fmt: skip

        def href(number: int) -> str:
            query = urlencode([*kept, ("limit", str(limit)), ("page", str(number))], safe="[],")
            return f"{self.base}{self.request.path}?{query}"

        links = {"self": {"href": href(page)}}
        if has_next:
            links["next"] = {"href": href(page + 1)}
        if page > 1:
            links["prev"] = {"href": href(page - 1)}
        return links
