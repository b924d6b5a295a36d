"""Transport-neutral request and response: the HTTP server and the httpx transport both
translate to and from these, so `Emulator.handle` is the whole emulator as one function."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from sync.emulator.params import Query, parse_query

HAL = "application/hal+json"
PROBLEM = "application/problem+json"
PLAIN_JSON = "application/json"
HTML = "text/html; charset=utf-8"


class BadJson(ValueError):
    """The request body is not JSON (or not the form the endpoint takes)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query_string: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client: str = "127.0.0.1"
    arrived_at: float | None = None  # wall-clock seconds its bytes came in (None: now)

    @cached_property
    def query(self) -> Query:
        return parse_query(self.query_string)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The parsed body; None when empty. Parsed once (the log, the fault matcher and the
        handler all read it); callers must not mutate it."""
        value, problem = self._parsed
        if problem is not None:
            raise BadJson(problem)
        return value

    @cached_property
    def _parsed(self) -> tuple[Any, str | None]:
        if not self.body.strip():
            return None, None
        try:
            return json.loads(self.body), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, str(exc)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (latency, "slow" faults)
    reset: bool = False  # drop the connection instead of answering

    def all_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        if self.status != 204:  # RFC 9110 §8.6: a 204 must not carry Content-Length
            headers["Content-Length"] = str(len(self.body))
        return headers


def json_response(status: int, data: Any, content_type: str = HAL) -> Response:
    # UTF-8 as is, without unicode escapes: every JSON parser reads both, and it is much faster.
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (a client sent 1e20 as digits)
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, content_type)


def no_content() -> Response:
    return Response(204)
