"""What an emulated amoCRM account is made of and how it behaves, fixed at start.

Everything a test may want to change while the server runs (latency, the rate limit, the
filtering switch, faults) is also settable later through `Emulator.set_controls`; these are
only the starting values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sync.emulator.hook_controls import HookControls

AuthMode = Literal["any", "long_lived", "oauth"]
RateLimitBody = Literal["json", "html"]
TieBreak = Literal["asc", "desc", "shuffle", "reshuffle"]

# 2026-01-01T00:00:00Z: seed timestamps are spread over the year before this instant, so the same
# seed gives byte-identical data whatever day the emulator runs.
DEFAULT_DATA_EPOCH = 1_767_225_600


@dataclass(frozen=True)
class EmulatorSettings:
    """The starting state and behaviour of one emulated account."""

    # --- data -----------------------------------------------------------------------------
    contacts: int = 1_000
    seed: int = 1
    data_epoch: int = DEFAULT_DATA_EPOCH
    # created_at and updated_at are spread over this many seconds before data_epoch (a year;
    # benchmarks pack them into a day or spread them over years)
    spread_s: int = 365 * 86_400
    trashed_fraction: float = 0.01  # share of seeded contacts that start in the trash
    # Share of seeded contacts created (half of them also last edited) by a user who has since
    # been deleted: GET returns that id, /users does not list it, and sending it back is a 400.
    deleted_user_fraction: float = 0.02
    subdomain: str = "emulator"
    account_id: int = 31_000_001
    public_base_url: str | None = None  # links use the request's Host header when None
    # False: an account without chat links (many are): `/contacts/chats` lists none, so the
    # array form can never prove itself by an answer with links of two contacts
    seed_chat_links: bool = True

    # --- timing ---------------------------------------------------------------------------
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # each response waits latency_ms + uniform(0, jitter_ms)
    arrival_delay_ms: float = 0.0  # each request reaches the counter uniform(0, this) late
    clock_start: float | None = None  # unix seconds; None = follow the wall clock
    clock_frozen: bool = False

    # --- rate limit: a sliding window counted at arrival, before any latency --------------
    rate_limit: float | None = 7.0  # requests per window per client IP; None = off
    rate_limit_window_s: float = 1.0
    rate_limit_body: RateLimitBody = "json"
    retry_after_s: int = 1  # `retry_after` in the JSON 429 (amoCRM's docs show 300)
    block_after_violations: int | None = 30  # 429s before every request gets 403; None = never
    block_window_s: float | None = None  # count only the 429s of the last N s; None = all
    # requests per window across every client (the account-wide budget all integrations
    # share; amoCRM's is 50): set below a client's max_rps for 429s it did not cause itself
    account_rate_limit: float | None = None

    # --- auth -----------------------------------------------------------------------------
    auth_mode: AuthMode = "any"
    long_lived_token: str | None = None  # None = mint a JWT-shaped one at start
    long_lived_token_ttl_s: int = 5 * 365 * 86_400
    client_id: str = "emulator-client-id"
    client_secret: str = "emulator-client-secret"  # noqa: S105 - a public test fixture
    redirect_uri: str = "https://localhost/oauth/callback"
    access_token_ttl_s: int = 86_400
    token_max_requests: int | None = None  # an OAuth access token dies after N accepted requests
    refresh_token_ttl_s: int = 90 * 86_400
    auth_code_ttl_s: int = 20 * 60
    admin_key: str | None = None  # when set, /_emulator/ needs `X-Emulator-Key: <key>`

    # --- API semantics where the vendor is silent -------------------------------------------
    api_filter_enabled: bool = True  # False = every filter[...] is silently ignored
    inclusive_date_bounds: bool = True
    tie_break: TieBreak = "asc"  # id order among equal sort keys ("shuffle": no id order;
    # "reshuffle": a new order on every list request, as amoCRM's undocumented one may be)
    default_page_limit: int = 50
    max_page_limit: int = 250  # a larger `limit` falls back to default_page_limit (§16)
    max_batch: int = 250  # more entities in one POST/PATCH gives 422
    events_page_limit: int = 250  # amocrm.ru documents 100
    honour_client_updated_at: bool = False
    # 400 `validation-errors` name entities by "request_id" (the client's, else the index) or by
    # "index" always (what the official SDK's own request_ids amount to; the vendor shows "0")
    rejected_request_id: str = "request_id"
    list_lag_s: float = 0.0  # eventual consistency: lists show the version of this long ago
    # /contacts/chats under a stand-in that knows only the documented scalar `contact_id=N`:
    # the array form `contact_id[]=..` is a 400 (scalar_only), lists every link of the account
    # (array_ignored) or lists none (array_empty); `chats_page_limit` links per answer, with
    # `_links.next` (`page=N`) when more follow
    chats_scalar_only: bool = False
    chats_array_ignored: bool = False
    chats_array_empty: bool = False
    chats_page_limit: int | None = None

    # --- webhooks: delivery delay, loss, duplicates, batching, retries, the disable rule -----
    webhooks: HookControls = field(default_factory=HookControls)
