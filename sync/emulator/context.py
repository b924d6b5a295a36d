"""What an API handler needs besides the request: the account, the clock, links, switches."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sync.emulator.clock import EmulatorClock
from sync.emulator.params import int_param
from sync.emulator.problems import ApiProblem
from sync.emulator.store import Account
from sync.emulator.wire import Request

API_USER = 8_000_001  # the admin whose token the API calls act as


@dataclass
class Ctx:
    request: Request
    account: Account
    clock: EmulatorClock
    base: str  # absolute scheme://host[:port] for _links
    filters_enabled: bool

    def page_and_limit(self, default: int, maximum: int) -> tuple[int, int]:
        """`page` (1-based) and `limit`, clamped to `maximum` (a larger limit is not an error)."""
        page = int_param(self.request.query, "page", 1)
        limit = int_param(self.request.query, "limit", default)
        if page is None or limit is None:
            raise ApiProblem(400, "page and limit must be integers")
        return max(page, 1), min(max(limit, 1), maximum)

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
