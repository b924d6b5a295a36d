"""`Controls`: the emulator's runtime switches (`Emulator.set_controls`,
`PATCH /_emulator/controls`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Controls:
    """What may change while the emulator runs (starting values come from the settings)."""

    latency_ms: float
    jitter_ms: float
    rate_limit: float | None
    rate_limit_body: str
    api_filter_enabled: bool
    block_after_violations: int | None
    list_lag_s: float = 0.0
    block_window_s: float | None = None
    account_rate_limit: float | None = None
    token_max_requests: int | None = None
    # answers the vendor documents do not rule out (another stand-in may give them): `_links.next`
    # on a full last page, an empty list as 200 `_embedded.<key>: []` instead of 204
    next_on_full_page: bool = False
    empty_list_as_200: bool = False
    never_next: bool = False  # no `_links.next` on any page: the end shows only as a 204
    chats_scalar_only: bool = False  # /contacts/chats stand-ins: see `EmulatorSettings`
    chats_array_ignored: bool = False
    chats_array_empty: bool = False
    chats_page_limit: int | None = None
    # one-way network delay, uniform(0, this): the server counts a request this much after its
    # bytes left (the client cannot see it; answers are as late)
    arrival_delay_ms: float = 0.0
    events_order: str = "desc"  # these and `enum_key`: `sync.emulator.quirks` (see its docstring)
    next_gaps: bool = False
    write_answer: str = "exact"
    string_numbers: bool = False
    enum_key: str = "enum_code"
    id_order_ignored: bool = False  # `order[id]` of the contacts list ignored (quirks)
