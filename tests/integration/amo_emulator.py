"""Shared set-up for the amo client's integration tests: an emulator served on 127.0.0.1."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sync.amo.backoff import Backoff
from sync.amo.chats import ChatForm
from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import AmoCrmConfig, OAuthConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, serve

FAST_BACKOFF = {"base_s": 0.02, "throttle_base_s": 0.05, "cap_s": 0.5}
# what the clients of one emulator learn of its /contacts/chats forms, as the clients of one
# process share it per origin (per emulator here: a later test's server may reuse a port)
_CHAT_FORMS: weakref.WeakKeyDictionary[Emulator, ChatForm] = weakref.WeakKeyDictionary()


def amo_config(base_url: str, token: str = "", **kw: Any) -> AmoCrmConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "access_token": Secret(token),
        "max_rps": 200.0,
        "timeout_s": 2.0,
        "max_retries": 4,
    }
    values.update(kw)
    return AmoCrmConfig(**values)


def oauth_config(emulator: Emulator, refresh_token: str = "") -> OAuthConfig:
    s = emulator.settings
    return OAuthConfig(
        client_id=s.client_id,
        client_secret=Secret(s.client_secret),
        redirect_uri=s.redirect_uri,
        refresh_token=Secret(refresh_token),
    )


@contextmanager
def running(**settings: Any) -> Iterator[tuple[Emulator, str]]:
    values: dict[str, Any] = {"contacts": 0, "seed": 3, "rate_limit": None}
    values.update(settings)
    emulator = Emulator(EmulatorSettings(**values))
    with serve(emulator) as server:
        yield emulator, server.base_url


def client_for(
    emulator: Emulator, base_url: str, *, limiter: RateLimiter | None = None, **kw: Any
) -> AmoClient:
    extra: dict[str, Any] = {"reconcile_settle_s": 0.1}
    extra["chat_form"] = kw.pop("chat_form", None) or _CHAT_FORMS.setdefault(emulator, ChatForm())
    extra.update({k: kw.pop(k) for k in ("workers", "reconcile_settle_s") if k in kw})
    config = amo_config(base_url, emulator.long_lived_token, **kw)
    return AmoClient.connect(
        config,
        limiter=limiter or RateLimiter(config.max_rps, margin_s=0.0),
        backoff=Backoff(**FAST_BACKOFF),
        **extra,
    )
