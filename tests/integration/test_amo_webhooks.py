"""The client's webhook calls against the emulator over real HTTP: list (204 = none), subscribe,
unsubscribe (False when there was nothing to remove)."""

from __future__ import annotations

from sync.amo.hooks import Webhook
from tests.integration.amo_emulator import client_for, running

EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]
DESTINATION = "https://sync.example.com/webhooks/amocrm/client-test-secret-123"


def test_subscribe_list_unsubscribe() -> None:
    with running() as (emulator, base_url), client_for(emulator, base_url) as client:
        assert client.list_webhooks() == []
        hook = client.subscribe_webhook(DESTINATION, EVENTS, sort=3)
        assert isinstance(hook, Webhook)
        assert (hook.destination, hook.settings, hook.sort, hook.disabled) == (
            DESTINATION, tuple(EVENTS), 3, False
        )  # fmt: skip
        assert hook.account_id == emulator.settings.account_id
        assert "client-test-secret" not in repr(hook)
        client.subscribe_webhook("https://other.example.com/h", ["delete_contact"])
        assert [h.id for h in client.list_webhooks(destination=DESTINATION)] == [hook.id]
        assert len(client.list_webhooks()) == 2
        assert client.unsubscribe_webhook(DESTINATION) is True
        assert client.unsubscribe_webhook(DESTINATION) is False
        assert client.list_webhooks(destination=DESTINATION) == []
        emulator.webhooks.close()


def test_a_disabled_hook_reads_as_disabled() -> None:
    with running() as (emulator, base_url), client_for(emulator, base_url) as client:
        hook = client.subscribe_webhook(DESTINATION, EVENTS)
        emulator.webhooks.hooks[hook.id].disabled = True
        (listed,) = client.list_webhooks()
        assert listed.disabled is True
