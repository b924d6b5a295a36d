"""The use case behind `amosync webhooks`, on the real client and the emulator over HTTP (no
database): each path of `register`, `unregister` by path prefix, and the status text."""

from __future__ import annotations

from sync.config import Secret, WebhooksConfig
from sync.daemon.webhooks.subscription import (
    EVENTS,
    hook_status,
    register,
    render_status,
    unregister,
)
from tests.integration.amo_emulator import client_for, running

SECRET = "Uc7_secret-for-use-case-tests"
HOOKS = WebhooksConfig(enabled=True, public_url="https://sync.example.com/base/",
                       secret=Secret(SECRET))  # fmt: skip
OURS = f"https://sync.example.com/base/webhooks/amocrm/{SECRET}"


def test_register_paths() -> None:
    with running() as (emulator, base_url), client_for(emulator, base_url) as client:
        created = register(client, HOOKS)
        assert (created.action, created.hook.destination) == ("created", OURS)
        assert register(client, HOOKS).action == "unchanged"
        client.subscribe_webhook(OURS, ["update_contact"])  # someone narrowed it by hand
        updated = register(client, HOOKS)
        assert (updated.action, updated.hook.settings) == ("updated", EVENTS)
        emulator.webhooks.hooks[updated.hook.id].disabled = True
        again = register(client, HOOKS)
        assert again.action == "re-subscribed"
        assert [(h.destination, h.disabled) for h in client.list_webhooks()] == [(OURS, False)]


def test_unregister_takes_every_secret_under_the_path_and_nothing_else() -> None:
    with running() as (emulator, base_url), client_for(emulator, base_url) as client:
        register(client, HOOKS)
        old = "https://sync.example.com/base/webhooks/amocrm/an-old-secret-value-1234"
        client.subscribe_webhook(old, EVENTS)
        client.subscribe_webhook("https://sync.example.com/other/hook", EVENTS)
        without_secret = WebhooksConfig(public_url=HOOKS.public_url)
        removed = unregister(client, without_secret)
        assert sorted(h.destination for h in removed) == sorted([OURS, old])
        assert [h.destination for h in client.list_webhooks()] == [
            "https://sync.example.com/other/hook"
        ]


def test_status_text() -> None:
    with running() as (emulator, base_url), client_for(emulator, base_url) as client:
        none = render_status(hook_status(client, HOOKS, None), HOOKS)
        assert none.splitlines() == [
            "destination: https://sync.example.com/base/webhooks/amocrm/Uc7_…",
            "subscription: none (run `amosync webhooks register`)",
            "last hook received by the daemon: never",
        ]
        hook = register(client, HOOKS).hook
        emulator.webhooks.hooks[hook.id].disabled = True
        status = hook_status(client, HOOKS, {"received_at": 1_767_225_600})
        text = render_status(status, HOOKS, now=1_767_225_610)
        assert "DISABLED by amoCRM (too many failed deliveries)" in text
        assert "run `amosync webhooks register` to subscribe it again" in text
        assert "last hook received by the daemon: 2026-01-01T00:00:00+00:00 (10 s ago)" in text
        assert SECRET not in text
        off = WebhooksConfig(public_url=HOOKS.public_url, secret=Secret(SECRET))
        assert "webhooks.enabled is false" in render_status(status, off)
