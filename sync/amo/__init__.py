"""The amoCRM API client: all HTTP to amoCRM goes through here.

Modules:
    client.py     AmoClient: list iterators, fetches and batched writes (the public surface)
    session.py    one logical request: rate budget, token, retries, classification, debug log
    responses.py  (status, headers, body) / transport error → error class and retry decision
    ratelimit.py  the rate limiter: evenly spaced starts (≤ 7 per second), AIMD pause on 429
    budget.py     the account's schedule and AIMD state (pure), shared through a BudgetStore
    gate.py       access tokens a 401 refused: not sent again (a daemon probes)
    refusal.py    the error of a request stopped unsent: names the request amoCRM refused
    backoff.py    exponential back-off with jitter, honouring `retry_after`
    pages.py      page iteration: 204 = empty, no `_links.next` = end, loop guard, prefetch
    writes.py     batching, request_id results, 400 mapping, lost-answer retry loop
    reconcile.py  after a lost write answer: find by reading what amoCRM applied
    matching.py   pure "does this contact carry what we sent" checks
    auth.py       long-lived token, or OAuth with rotation stored in the database
    tls.py        the TLS context all clients share: built once, in a thread as a command starts
"""

from __future__ import annotations

from sync.logs import unimportable

# httpx imports its command-line tool with the package, and the tool imports pygments and rich
# (about 70 modules, ~30 ms of every command's start-up) whenever they are installed. Nothing
# here runs it: hidden for this import, they leave httpx a stub `main` in its place.
with unimportable("pygments", "rich"):
    import httpx  # noqa: F401 - the first import of httpx in the process is this one

# httpx imports its transport, httpcore, when the first client is built: ~25 ms on a command's
# way from its database connect to its first request, imported here with the command's other
# modules instead. httpcore imports anyio and trio for the locks of its async pool, which only
# httpx's AsyncClient uses (nothing in amosync does): hidden for this import (~5 ms; anyio
# compiles code as it loads), an AsyncClient in this process would say httpcore[asyncio] is
# missing.
with unimportable("anyio", "trio"):
    import httpcore  # noqa: F401

from sync.amo.auth import (
    OAuthTokens,
    StaticToken,
    TokenPair,
    TokenProvider,
    TokenStorage,
    store_authorization_code,
)
from sync.amo.client import AmoClient
from sync.amo.limiters import shared_limiter
from sync.amo.pages import Page
from sync.amo.query import encode_query
from sync.amo.ratelimit import RateLimiter
from sync.amo.session import AmoSession, Reply
from sync.amo.writes import WriteResult

__all__ = [
    "AmoClient",
    "AmoSession",
    "OAuthTokens",
    "Page",
    "RateLimiter",
    "Reply",
    "StaticToken",
    "TokenPair",
    "TokenProvider",
    "TokenStorage",
    "WriteResult",
    "encode_query",
    "shared_limiter",
    "store_authorization_code",
]
