"""`amosync webhooks register | status | unregister`: the daemon's hook as amoCRM knows it.

The destination is `webhooks.public_url` + `/webhooks/amocrm/<secret>`. Everything a person
sees shows it masked (the secret's first 4 characters, then `…`). Subscriptions under the same
`public_url` + `/webhooks/amocrm/` with another secret are left over from an earlier secret:
amoCRM keeps posting to them and the daemon answers 404, so `register` removes them and
`unregister` removes them with ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sync.amo.client import AmoClient
from sync.amo.hooks import Webhook
from sync.config import WebhooksConfig, mask_secret

EVENTS = ("add_contact", "update_contact", "delete_contact", "restore_contact")
LAST_HOOK_KEY = "webhooks.last_hook"  # sync_state row the daemon writes: {"received_at": unix s}


@dataclass(frozen=True)
class Registration:
    action: str  # created | unchanged | updated | re-subscribed
    hook: Webhook
    removed: tuple[Webhook, ...]  # stale subscriptions (an old secret) removed


@dataclass(frozen=True)
class HookStatus:
    hook: Webhook | None
    stale: tuple[Webhook, ...]
    last_hook_at: float | None  # unix seconds the daemon last received a hook


def prefix_of(config: WebhooksConfig) -> str:
    return config.public_url.rstrip("/") + config.HOOK_PATH


def masked(destination: str, prefix: str) -> str:
    """A destination under our hook path with its secret masked (any other: unchanged)."""
    if destination.startswith(prefix):
        return prefix + mask_secret(destination[len(prefix) :])
    return destination


def _ours(client: AmoClient, config: WebhooksConfig) -> tuple[Webhook | None, list[Webhook]]:
    """Our subscription and the stale ones under our hook path (one list request)."""
    prefix, destination = prefix_of(config), config.destination
    hooks = client.list_webhooks()
    ours = next((h for h in hooks if h.destination == destination), None)
    stale = [h for h in hooks if h.destination.startswith(prefix) and h.destination != destination]
    return ours, stale


def register(client: AmoClient, config: WebhooksConfig) -> Registration:
    """Subscribe our destination to the contact events; idempotent: an identical, enabled
    subscription is left alone, a disabled one is removed and subscribed again."""
    ours, stale = _ours(client, config)
    for old in stale:
        client.unsubscribe_webhook(old.destination)
    if ours is not None and not ours.disabled and set(ours.settings) == set(EVENTS):
        return Registration("unchanged", ours, tuple(stale))
    action = "created" if ours is None else "updated"
    if ours is not None and ours.disabled:
        client.unsubscribe_webhook(ours.destination)  # a fresh hook: amoCRM forgets its failures
        action = "re-subscribed"
    hook = client.subscribe_webhook(config.destination, EVENTS)
    return Registration(action, hook, tuple(stale))


def unregister(client: AmoClient, config: WebhooksConfig) -> list[Webhook]:
    """Remove every subscription under our hook path (ours and any with an old secret)."""
    ours, stale = _ours(client, config)
    found = ([ours] if ours is not None else []) + stale
    return [hook for hook in found if client.unsubscribe_webhook(hook.destination)]


def hook_status(
    client: AmoClient, config: WebhooksConfig, last_hook: Mapping[str, Any] | None
) -> HookStatus:
    ours, stale = _ours(client, config)
    received = (last_hook or {}).get("received_at")
    at = float(received) if isinstance(received, int | float) else None
    return HookStatus(ours, tuple(stale), at)


# --- what a person reads ---------------------------------------------------------------------


def describe_hook(hook: Webhook, prefix: str) -> str:
    state = "DISABLED by amoCRM (too many failed deliveries)" if hook.disabled else "active"
    return (
        f"id {hook.id}, {state}, events {', '.join(hook.settings)}, "
        f"posts to {masked(hook.destination, prefix)}{_times(hook)}"
    )


def render_status(status: HookStatus, config: WebhooksConfig, now: float | None = None) -> str:
    prefix = prefix_of(config)
    lines = [f"destination: {config.masked_destination if config.secret else prefix + '…'}"]
    if not config.enabled:
        lines.append("warning: webhooks.enabled is false, so the daemon answers hooks with 404")
    if status.hook is None:
        lines.append("subscription: none (run `amosync webhooks register`)")
    else:
        lines.append(f"subscription: {describe_hook(status.hook, prefix)}")
        if status.hook.disabled:
            lines.append("  run `amosync webhooks register` to subscribe it again")
    for old in status.stale:
        lines.append(f"stale subscription (an old secret; register removes it): "
                     f"{describe_hook(old, prefix)}")  # fmt: skip
    lines.append(f"last hook received by the daemon: {_ago(status.last_hook_at, now)}")
    return "\n".join(lines)


def status_json(status: HookStatus, config: WebhooksConfig) -> dict[str, Any]:
    prefix = prefix_of(config)

    def hook_json(hook: Webhook) -> dict[str, Any]:
        return {"id": hook.id, "destination": masked(hook.destination, prefix),
                "settings": list(hook.settings), "disabled": hook.disabled, "sort": hook.sort,
                "created_at": hook.created_at, "updated_at": hook.updated_at}  # fmt: skip

    return {
        "enabled": config.enabled,
        "destination": config.masked_destination if config.secret else None,
        "subscription": hook_json(status.hook) if status.hook else None,
        "stale": [hook_json(h) for h in status.stale],
        "last_hook_received_at": _iso(status.last_hook_at) if status.last_hook_at else None,
    }


def _times(hook: Webhook) -> str:
    parts = [f"{name} {_iso(value)}" for name, value in
             (("created", hook.created_at), ("updated", hook.updated_at)) if value]  # fmt: skip
    return f" ({', '.join(parts)})" if parts else ""


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")


def _ago(unix_s: float | None, now: float | None, clock: Callable[[], float] = time.time) -> str:
    if unix_s is None:
        return "never"
    seconds = max(0, round((now if now is not None else clock()) - unix_s))
    return f"{_iso(unix_s)} ({seconds} s ago)"
