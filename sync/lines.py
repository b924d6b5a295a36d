"""Lines a person reads: at most `LINE_LIMIT` characters, long URLs cut to their path and first
parameters. Pure; the ground floor (errors, logs and the CLI use it).

A chat lookup for 250 contacts is a 5,000-character URL; in an error message it would make the
one line a person reads unreadable. What is cut is said (`…(+496 more parameters)`); the whole
URL is logged at debug level only (`amo_request_failed`).
"""

from __future__ import annotations

LINE_LIMIT = 300  # characters of any line printed on the terminal or logged for a person
URL_LIMIT = 120  # characters of a URL inside such a line
ELLIPSIS = "…"


def bound_line(text: str, limit: int = LINE_LIMIT) -> str:
    """`text` cut to `limit` characters (the last one an ellipsis when anything was cut)."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def bound_lines(text: str, limit: int = LINE_LIMIT) -> str:
    """Every line of `text` cut to `limit` characters."""
    if len(text) <= limit:
        return text
    return "\n".join(bound_line(line, limit) for line in text.split("\n"))


def cut_url(url: str, limit: int = URL_LIMIT) -> str:
    """A URL (or `path?query`) shortened to its path and as many leading query parameters as
    fit, with the number of parameters left out: `/api/v4/contacts/chats?contact_id[]=1&…(+249
    more parameters)`. A URL that fits is returned unchanged."""
    if len(url) <= limit:
        return url
    path, _, query = url.partition("?")
    if len(path) >= limit or not query:
        return bound_line(path, limit)
    params = query.split("&")
    tail = f"{ELLIPSIS}(+{len(params)} more parameters)"
    budget = limit - len(path) - 1 - len(tail)
    kept: list[str] = []
    used = 0
    for param in params:
        if used + len(param) + 1 > budget:
            break
        kept.append(param)
        used += len(param) + 1
    rest = len(params) - len(kept)
    if not kept:
        return f"{path}?{ELLIPSIS}({rest} parameters)"
    more = f"{ELLIPSIS}(+{rest} more parameter{'s' if rest != 1 else ''})"
    return f"{path}?{'&'.join(kept)}&{more}"


def count(number: int, noun: str) -> str:
    """`1 conflict`, `2 conflicts`, `0 requests`: a number with its noun (regular plurals)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
