"""Contract: `/api/v4/webhooks` (subscribe, list, unsubscribe) with amoCRM's validation, and
hooks delivered to a real local HTTP receiver on every contact change, with each knob: delay,
loss, duplicates, batching, retries, the auto-disable rule."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from emulator_helpers import BASE_SETTINGS, live_ids

from sync.emulator import Emulator, EmulatorSettings, FaultRule
from sync.emulator.hook_controls import HookControls
from tests.integration.hook_receiver import Receiver, receiving

HOOKS = "/api/v4/webhooks"
CONTACT_EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]


@pytest.fixture
def settings() -> EmulatorSettings:
    return replace(BASE_SETTINGS, contacts=40)


@pytest.fixture
def emulator(settings: EmulatorSettings) -> Iterator[Emulator]:
    emulator = Emulator(settings)
    yield emulator
    emulator.webhooks.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def subscribe(client: httpx.Client, url: str, settings: list[str] | None = None) -> dict[str, Any]:
    answer = client.post(HOOKS, json={"destination": url, "settings": settings or CONTACT_EVENTS})
    assert answer.status_code == 200, answer.text
    return answer.json()


def controls(emulator: Emulator, **changes: Any) -> HookControls:
    return emulator.webhooks.dispatcher.set_controls(changes)


def settle(emulator: Emulator) -> list[dict[str, Any]]:
    assert emulator.webhooks.dispatcher.wait_idle(15), "hooks still queued or in flight"
    return emulator.webhooks.dispatcher.deliveries()


# --- the API ----------------------------------------------------------------------------------


def test_subscribe_list_unsubscribe(client: httpx.Client, emulator: Emulator) -> None:
    assert client.get(HOOKS).status_code == 204  # none yet: 204, as every empty list
    hook = subscribe(client, "https://sync.example.com/webhooks/amocrm/abc")
    assert hook["destination"] == "https://sync.example.com/webhooks/amocrm/abc"
    assert hook["settings"] == CONTACT_EVENTS
    assert hook["disabled"] is False
    assert hook["account_id"] == emulator.settings.account_id
    assert {"id", "sort", "created_by", "created_at", "updated_at"} <= hook.keys()
    other = subscribe(client, "https://other.example.com/hook", ["delete_contact"])
    listed = client.get(HOOKS).json()
    assert listed["_total_items"] == 2
    assert [h["id"] for h in listed["_embedded"]["webhooks"]] == [hook["id"], other["id"]]
    only = client.get(HOOKS, params={"filter[destination]": "https://other.example.com/hook"})
    assert [h["id"] for h in only.json()["_embedded"]["webhooks"]] == [other["id"]]
    gone = client.request("DELETE", HOOKS, json={"destination": "https://other.example.com/hook"})
    assert gone.status_code == 204
    assert [h["id"] for h in client.get(HOOKS).json()["_embedded"]["webhooks"]] == [hook["id"]]
    again = client.request("DELETE", HOOKS, json={"destination": "https://other.example.com/hook"})
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"


def test_subscribing_a_destination_again_updates_it(client: httpx.Client) -> None:
    first = subscribe(client, "https://sync.example.com/h", ["update_contact"])
    second = subscribe(client, "https://sync.example.com/h", CONTACT_EVENTS)
    assert second["id"] == first["id"]
    assert second["settings"] == CONTACT_EVENTS
    assert client.get(HOOKS).json()["_total_items"] == 1


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"settings": CONTACT_EVENTS}, "NotBlank", "destination"),
        ({"destination": "ftp://x.example.com/h", "settings": CONTACT_EVENTS}, "InvalidUrl",
         "destination"),
        ({"destination": "not a url", "settings": CONTACT_EVENTS}, "InvalidUrl", "destination"),
        ({"destination": 5, "settings": CONTACT_EVENTS}, "InvalidType", "destination"),
        ({"destination": "https://x.example.com/h"}, "NotBlank", "settings"),
        ({"destination": "https://x.example.com/h", "settings": "update_contact"}, "InvalidType",
         "settings"),
        ({"destination": "https://x.example.com/h", "settings": ["update_contact", "update_lead"]},
         "NotSupportedChoice", "settings.1"),
        ({"destination": "https://x.example.com/h", "settings": CONTACT_EVENTS, "sort": "1"},
         "InvalidType", "sort"),
    ],
)  # fmt: skip
def test_subscription_validation(client: httpx.Client, body: Any, code: str, path: str) -> None:
    answer = client.post(HOOKS, json=body)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    errors = answer.json()["validation-errors"][0]["errors"]
    assert {"code": code, "path": path} in [{"code": e["code"], "path": e["path"]} for e in errors]
    assert client.get(HOOKS).status_code == 204  # nothing was saved


def test_bodies_that_are_not_a_webhook(client: httpx.Client) -> None:
    assert client.post(HOOKS, content=b"{nope").status_code == 400
    assert client.post(HOOKS, json={}).json()["detail"] == "Request data can not be empty"
    assert client.request("DELETE", HOOKS, json={"url": "x"}).status_code == 400
    assert client.put(HOOKS, json={}).status_code == 405


def test_at_most_100_webhooks(client: httpx.Client) -> None:
    for number in range(100):
        subscribe(client, f"https://h{number}.example.com/hook")
    answer = client.post(HOOKS, json={"destination": "https://one-more.example.com/hook",
                                      "settings": CONTACT_EVENTS})  # fmt: skip
    assert answer.status_code == 422
    assert client.get(HOOKS).json()["_total_items"] == 100


def test_auth_and_rate_limit_apply(anonymous: httpx.Client, client: httpx.Client,
                                   emulator: Emulator) -> None:  # fmt: skip
    assert anonymous.get(HOOKS).status_code == 401
    emulator.set_controls(rate_limit=1.0)
    statuses = [client.get(HOOKS).status_code for _ in range(3)]
    assert 429 in statuses
    assert [r["path"] for r in emulator.requests()][-3:] == [HOOKS] * 3  # logged like any call


# --- delivery --------------------------------------------------------------------------------


def test_every_kind_of_change_is_delivered(client: httpx.Client, emulator: Emulator,
                                           receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    contact_id = live_ids(emulator)[0]
    client.patch(f"/api/v4/contacts/{contact_id}", json={"name": "Через API"})  # API write
    (new_id,) = emulator.create_contacts([{"name": "Новый"}])  # a user in the UI
    emulator.delete_contact(new_id)
    emulator.restore_contact(new_id)
    settle(emulator)  # four changes, in one to four posts
    hooks = receiver.hooks
    assert {h.path for h in hooks} == {"/webhooks/amocrm/s3cret-s3cret-s3cret"}
    assert {h.content_type for h in hooks} == {"application/x-www-form-urlencoded"}
    events = {event: entity for h in hooks for event in ("update", "add", "delete", "restore")
              for entity in h.entities(event)}  # fmt: skip
    assert events["update"]["id"] == str(contact_id)
    assert events["update"]["name"] == "Через API"
    current = emulator.contact(contact_id)
    assert current is not None
    assert events["update"]["updated_at"] == str(current["updated_at"])
    assert events["add"]["id"] == str(new_id)
    assert events["delete"] == {"id": str(new_id), "type": "contact"}
    assert events["restore"]["name"] == "Новый"  # a restore carries the entity
    form = hooks[0].form
    assert form["account"] == {"id": str(emulator.settings.account_id), "subdomain": "emulator"}


def test_only_subscribed_events_are_delivered(client: httpx.Client, emulator: Emulator,
                                              receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url(), ["delete_contact"])
    first, second = live_ids(emulator)[:2]
    emulator.update_contacts([{"id": first, "name": "ignored"}])
    emulator.delete_contact(second)
    (hook,) = receiver.wait_for(1)
    settle(emulator)
    assert len(receiver.hooks) == 1
    assert hook.entities("delete") == [{"id": str(second), "type": "contact"}]
    assert hook.entities("update") == []


def test_faults_that_change_contacts_send_hooks(client: httpx.Client, emulator: Emulator,
                                                receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    emulator.add_fault(FaultRule(kind="vanish", path="/api/v4/contacts", touch=1))
    before = set(live_ids(emulator))
    client.get("/api/v4/contacts", params={"limit": 5})  # a user deletes one just before it
    (vanished,) = before - set(live_ids(emulator))
    (hook,) = receiver.wait_for(1)
    assert hook.entities("delete") == [{"id": str(vanished), "type": "contact"}]


def test_the_change_never_waits_for_its_hook(client: httpx.Client, emulator: Emulator,
                                             receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    receiver.hold = True  # the receiver takes the post and does not answer until released
    contact_id = live_ids(emulator)[0]
    answer = client.patch(f"/api/v4/contacts/{contact_id}", json={"name": "не ждёт"})
    assert answer.status_code == 200  # answered while its hook is unanswered (or not yet sent)
    assert emulator.webhooks.dispatcher.counts()["delivered"] == 0
    receiver.release()
    receiver.wait_for(1)
    assert settle(emulator)[0]["outcome"] == "delivered"


def test_delay_holds_hooks_back(client: httpx.Client, emulator: Emulator,
                                receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, delay_ms=3_600_000)
    emulator.touch_contacts(count=2)
    assert emulator.webhooks.dispatcher.counts()["queued"] == 2
    assert receiver.hooks == []
    controls(emulator, delay_ms=0)  # the held changes go now
    receiver.wait_for(1)
    assert sum(len(h.entities("update")) for h in receiver.hooks) == 2


def test_batching_packs_several_entities_and_events_into_one_post(
    client: httpx.Client, emulator: Emulator, receiver: Receiver
) -> None:
    subscribe(client, receiver.url())
    controls(emulator, delay_ms=3_600_000, batch_max=3)
    ids = live_ids(emulator)[:7]
    emulator.update_contacts([{"id": i, "first_name": "Bulk"} for i in ids[:6]])
    emulator.delete_contact(ids[6])
    controls(emulator, delay_ms=0)
    settle(emulator)
    posts = [h.form["contacts"] for h in receiver.wait_for(3)]
    assert [sum(len(p[e]) for e in p) for p in posts] == [3, 3, 1]
    assert [sorted(p) for p in posts] == [["update"], ["update"], ["delete"]]
    assert sorted(int(e["id"]) for p in posts[:2] for e in p["update"].values()) == ids[:6]
    controls(emulator, delay_ms=3_600_000, batch_max=10)
    emulator.update_contacts([{"id": ids[0], "first_name": "Again"}])
    emulator.restore_contact(ids[6])
    controls(emulator, delay_ms=0)
    settle(emulator)
    assert sorted(receiver.hooks[-1].form["contacts"]) == ["restore", "update"]  # one post


def test_lost_hooks_never_arrive(client: httpx.Client, emulator: Emulator,
                                 receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, loss_rate=1.0)
    emulator.touch_contacts(count=3)
    records = settle(emulator)
    assert len(records) >= 1
    assert {r["outcome"] for r in records} == {"lost"}
    assert receiver.arrived == 0
    controls(emulator, loss_rate=0.5, batch_max=1)
    for contact_id in live_ids(emulator)[:30]:
        emulator.touch_contacts(ids=[contact_id])
    outcomes = [r["outcome"] for r in settle(emulator)[len(records) :]]
    assert outcomes.count("lost") + outcomes.count("delivered") == 30
    assert 0 < outcomes.count("lost") < 30
    assert len(receiver.hooks) == outcomes.count("delivered")


def test_duplicates_arrive_twice(client: httpx.Client, emulator: Emulator,
                                 receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, duplicate_rate=1.0)
    emulator.touch_contacts(count=1)
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert [r["duplicate"] for r in settle(emulator)] == [False, True]


def test_a_failed_post_is_sent_again(client: httpx.Client, emulator: Emulator,
                                     receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, retry_after_s=0.0, max_attempts=3)
    receiver.status = 500
    emulator.touch_contacts(count=1)
    records = settle(emulator)
    assert [(r["attempt"], r["outcome"], r["status"]) for r in records] == [
        (1, "failed", 500), (2, "failed", 500), (3, "failed", 500)
    ]  # fmt: skip
    receiver.status = 503
    controls(emulator, retry_after_s=3600.0)
    emulator.touch_contacts(count=1)
    receiver.wait_for(4)
    dispatcher = emulator.webhooks.dispatcher
    assert not dispatcher.wait_idle(0.2)  # the failed post waits its hour to be sent again
    assert dispatcher.counts()["retrying"] == 1
    receiver.status = 200
    controls(emulator, retry_after_s=0.0)  # ... or goes now
    final = settle(emulator)
    assert [(r["attempt"], r["outcome"]) for r in final[3:]] == [(1, "failed"), (2, "delivered")]
    assert receiver.hooks[-1].body == receiver.hooks[-2].body  # the same post, sent again


def test_without_retry_a_failure_is_final(client: httpx.Client, emulator: Emulator,
                                          receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, retry=False, retry_after_s=0.0)
    receiver.status = 404
    emulator.touch_contacts(count=1)
    assert [(r["attempt"], r["status"]) for r in settle(emulator)] == [(1, 404)]


def test_an_unanswered_post_times_out(client: httpx.Client, emulator: Emulator,
                                      receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, timeout_s=0.3, retry=False)
    receiver.hold = True
    emulator.touch_contacts(count=1)
    (record,) = settle(emulator)
    assert (record["outcome"], record["error"]) == ("failed", "timeout")


def test_too_many_failures_disable_the_hook(client: httpx.Client, emulator: Emulator,
                                            receiver: Receiver) -> None:  # fmt: skip
    hook = subscribe(client, receiver.url())
    controls(emulator, retry=False, disable_after=3, batch_max=1)
    receiver.status = 500
    for contact_id in live_ids(emulator)[:4]:  # four failures: more than three
        emulator.touch_contacts(ids=[contact_id])
        settle(emulator)
    records = emulator.webhooks.dispatcher.deliveries()
    assert [r["disabled_hook"] for r in records] == [False, False, False, True]
    (listed,) = client.get(HOOKS).json()["_embedded"]["webhooks"]
    assert listed["disabled"] is True
    emulator.touch_contacts(count=1)  # a disabled hook gets nothing
    settle(emulator)
    assert receiver.arrived == 4
    receiver.status = 200
    enabled = client.post(f"/_emulator/webhooks/{hook['id']}/enable")
    assert enabled.json()["disabled"] is False
    emulator.touch_contacts(count=1)
    settle(emulator)
    assert receiver.arrived == 5
    assert emulator.webhooks.dispatcher.deliveries()[-1]["outcome"] == "delivered"


def test_successes_do_not_save_a_hook_whose_latest_post_failed(
    client: httpx.Client, emulator: Emulator, receiver: Receiver
) -> None:
    subscribe(client, receiver.url())
    controls(emulator, retry=False, disable_after=2, batch_max=1)
    for status in (500, 500, 200, 200, 500):
        receiver.status = status
        emulator.touch_contacts(count=1)
        settle(emulator)
    assert [r["disabled_hook"] for r in emulator.webhooks.dispatcher.deliveries()] == [
        False, False, False, False, True
    ]  # fmt: skip


def test_resubscribing_enables_a_disabled_hook(client: httpx.Client, emulator: Emulator,
                                               receiver: Receiver) -> None:  # fmt: skip
    subscribe(client, receiver.url())
    controls(emulator, retry=False, disable_after=0)
    receiver.status = 500
    emulator.touch_contacts(count=1)
    settle(emulator)
    assert client.get(HOOKS).json()["_embedded"]["webhooks"][0]["disabled"] is True
    assert subscribe(client, receiver.url())["disabled"] is False


def test_admin_api(client: httpx.Client, emulator: Emulator, receiver: Receiver) -> None:
    subscribe(client, receiver.url())
    changed = client.patch("/_emulator/webhooks/controls", json={"delay_ms": 5, "loss_rate": 0})
    assert changed.json()["delay_ms"] == 5.0
    bad = client.patch("/_emulator/webhooks/controls", json={"loss_rate": 2})
    assert bad.status_code == 400
    assert client.patch("/_emulator/webhooks/controls", json={"nope": 1}).status_code == 400
    emulator.touch_contacts(count=1)
    assert client.post("/_emulator/webhooks/idle", json={"timeout_s": 10}).json() == {"idle": True}
    (record,) = client.get("/_emulator/webhooks/deliveries").json()
    assert record["outcome"] == "delivered"
    overview = client.get("/_emulator/webhooks").json()
    assert overview["counts"]["delivered"] == 1
    assert overview["webhooks"][0]["recent_failures"] == 0
    assert client.post("/_emulator/webhooks/99/enable").status_code == 404
    assert client.delete("/_emulator/webhooks/deliveries").json() == []
    client.delete("/_emulator/webhooks")
    assert client.get(HOOKS).status_code == 204


def test_reset_forgets_subscriptions(client: httpx.Client, emulator: Emulator) -> None:
    subscribe(client, "https://sync.example.com/h")
    emulator.reset()
    assert emulator.webhooks.list() == []


def test_starting_knobs_come_from_the_settings() -> None:
    emulator = Emulator(replace(BASE_SETTINGS, contacts=0,
                                webhooks=HookControls(delay_ms=250, batch_max=7)))  # fmt: skip
    assert emulator.webhooks.dispatcher.controls().batch_max == 7
    with pytest.raises(ValueError, match="loss_rate"):
        HookControls().changed({"loss_rate": -0.1})


def test_the_command_takes_webhook_knobs() -> None:
    """`amosync emulator --webhook KEY=VALUE`: the knobs reach the running emulator; a bad one
    is a usage error (exit 2) naming it."""
    base = [sys.executable, "-m", "sync", "emulator", "--port", "0", "--contacts", "5"]
    bad = subprocess.run([*base, "--webhook", "loss_rate=2"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "loss_rate must be between 0 and 1" in bad.stderr
    knobs = ["--webhook", "delay_ms=250", "--webhook", "retry=false", "--webhook", "batch_max=7"]
    with subprocess.Popen([*base, *knobs], stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        admin = next(line for line in process.stdout if line.startswith("admin="))
        base_url = admin.strip().removeprefix("admin=").removesuffix("/_emulator/state")
        knobs_seen = httpx.get(f"{base_url}/_emulator/webhooks/controls", timeout=10).json()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert (knobs_seen["delay_ms"], knobs_seen["retry"], knobs_seen["batch_max"]) == (250, False, 7)
