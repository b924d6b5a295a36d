"""How each fault kind turns into a response: before the endpoint runs, or after it (spoiling
an answer whose write has already been applied)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sync.emulator.faults import FaultRule
from sync.emulator.problems import html_page, internal_error, problem
from sync.emulator.routes import is_write
from sync.emulator.wire import HTML, PROBLEM, Request, Response, json_response, no_content

GATEWAY_TITLES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
HTML_TITLES = {403: "Forbidden", **GATEWAY_TITLES}
TOO_MANY = "You have sent too many requests in a given amount of time. Please try again later."


def refusal(verdict: str, body: str, retry_after_s: int) -> Response:
    """The rate limiter's answer: 403 HTML for a blocked IP, 429 JSON or HTML over the limit."""
    if verdict == "blocked":
        return Response(403, html_page(403, "Forbidden"), HTML)
    return too_many(body, retry_after_s)


def too_many(body: str, retry_after_s: int = 1) -> Response:
    if body == "html":  # the gateway variant: no JSON, no Retry-After header
        return Response(429, html_page(429, "Too Many Requests"), HTML)
    return json_response(429, {**problem(429, TOO_MANY), "retry_after": retry_after_s}, PROBLEM)


def error_response(status: int, body: str = "json") -> Response:
    """An HTTP error: 500 problem JSON, 502/503/504 HTML; any status as an HTML page with
    `body="html"` (403 HTML is amoCRM's IP block)."""
    if body == "html":
        return Response(status, html_page(status, HTML_TITLES.get(status, "Error")), HTML)
    if status == 500:
        return json_response(500, internal_error(secrets.token_hex(8)), PROBLEM)
    if status in GATEWAY_TITLES:
        return Response(status, html_page(status, GATEWAY_TITLES[status]), HTML)
    return json_response(status, problem(status, "Injected error"), PROBLEM)


def early_response(rule: FaultRule, request: Request) -> Response | None:
    """The answer that replaces the endpoint entirely, or None when the endpoint must run."""
    after_write = rule.apply_write and is_write(request.method)
    if rule.kind == "error" and not after_write:
        return error_response(rule.status, rule.body)
    if rule.kind == "reset" and not after_write:
        return Response(0, reset=True)
    replacement = _REPLACEMENTS.get(rule.kind)
    return replacement(rule) if replacement else None


_REPLACEMENTS: dict[str, Callable[[FaultRule], Response]] = {
    "rate_limit": lambda rule: too_many(rule.body, rule.retry_after_s),
    "payment_required": lambda _: json_response(402, problem(402, "Payment required"), PROBLEM),
    "unauthorized": lambda _: json_response(
        401, problem(401, "Invalid user name or password"), PROBLEM
    ),
    "empty_page": lambda _: no_content(),
    "absent": lambda _: no_content(),
}


def spoil(rule: FaultRule, request: Request, response: Response) -> Response:
    """Apply a fault to an answer that was computed (and whose write, if any, is saved)."""
    if rule.kind == "error":
        return error_response(rule.status, rule.body)
    if rule.kind == "reset":
        return Response(0, reset=True)
    if rule.kind == "slow":
        response.delay_s += rule.delay_ms / 1000
    if rule.kind == "truncate" and response.body:
        response.body = response.body[: len(response.body) // 2]
    return response
