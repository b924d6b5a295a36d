"""Webhooks of the emulated account: the subscriptions `/api/v4/webhooks` manages, and the
bridge from contact changes to their delivery (`hook_delivery.Dispatcher`).

`Webhooks` is one per account (`Emulator.webhooks`; a reset replaces it). The store calls
`on_change` under its lock for every contact change, whoever made it (the API, the admin API,
faults); this only queues the change for each subscribed destination, and a background thread
posts it: the request that made the change never waits for a hook.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sync.emulator.hook_controls import HookControls
from sync.emulator.hook_delivery import Dispatcher, Entry
from sync.emulator.hook_payload import contact_fields
from sync.emulator.problems import ApiProblem, validation_failed
from sync.emulator.values import error

if TYPE_CHECKING:
    from sync.emulator.clock import EmulatorClock
    from sync.emulator.model import Contact
    from sync.emulator.store import Account

MAX_WEBHOOKS = 100  # per account (fact sheet §1, §16)
MAX_DESTINATION = 2000  # characters; a longer URL is refused
# Contact events one may subscribe to, and the change (store event) that fires each.
SETTINGS = {
    "add_contact": "add",
    "update_contact": "update",
    "delete_contact": "delete",
    "restore_contact": "restore",
    "responsible_contact": "responsible",
    "note_contact": "note",  # accepted; the emulator has no notes, so it never fires
}


@dataclass
class Subscription:
    """One webhook, rendered as amoCRM's webhook model by `to_json`."""

    id: int
    destination: str
    settings: list[str]
    sort: int
    account_id: int
    created_by: int
    created_at: int
    updated_at: int
    disabled: bool = False
    failures: list[float] = field(default_factory=list)  # monotonic times, for the rule

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["failures"]
        return data

    def wants(self, change: str) -> bool:
        return not self.disabled and any(SETTINGS.get(s) == change for s in self.settings)


class Webhooks:
    """The account's subscriptions plus their delivery; every method is thread-safe."""

    def __init__(
        self,
        account: Account,
        clock: EmulatorClock,
        controls: HookControls,
        *,
        seed: int = 0,
    ) -> None:
        self.account = account
        self.clock = clock
        self.lock = threading.Lock()
        self.hooks: dict[int, Subscription] = {}
        self._next_id = 1
        self.dispatcher = Dispatcher(self, controls, seed=seed)

    # --- the API ----------------------------------------------------------------------------

    def subscribe(self, body: Any, actor: int) -> Subscription:
        """`POST /api/v4/webhooks`. An existing destination gets the new settings and sort and
        is enabled again (its failures forgotten); a new one is added (at most 100)."""
        destination, settings, sort = parse_subscription(body)
        now = self.clock.now_s()
        with self.lock:
            hook = self._find(destination)
            if hook is None:
                if len(self.hooks) >= MAX_WEBHOOKS:
                    raise ApiProblem(422, f"Limit {MAX_WEBHOOKS} webhooks per account")
                hook = Subscription(self._next_id, destination, settings, sort,
                                    self.account.settings.account_id, actor, now, now)  # fmt: skip
                self._next_id += 1
                self.hooks[hook.id] = hook
            else:
                hook.settings, hook.sort, hook.updated_at = settings, sort, now
                self._enable(hook)
            return _copy(hook)

    def unsubscribe(self, body: Any) -> None:
        """`DELETE /api/v4/webhooks` with `{"destination": URL}`; 404 when none has it."""
        if not isinstance(body, dict) or not isinstance(body.get("destination"), str):
            raise validation_failed([_entity_error("NotBlank", "destination",
                                                   "This value should not be blank.")])  # fmt: skip
        with self.lock:
            hook = self._find(body["destination"])
            if hook is None:
                raise ApiProblem(404, "Webhook not found")
            del self.hooks[hook.id]
        self.dispatcher.forget(hook.id)

    def list(self, destination: str | None = None) -> list[Subscription]:
        """Subscriptions by `sort`, then id; `destination` is an exact match."""
        with self.lock:
            hooks = [h for h in self.hooks.values() if destination in (None, h.destination)]
            return [_copy(h) for h in sorted(hooks, key=lambda h: (h.sort, h.id))]

    # --- admin --------------------------------------------------------------------------------

    def enable(self, hook_id: int) -> Subscription:
        """Re-enable a disabled hook by hand (what an admin does in amoCRM's settings)."""
        with self.lock:
            hook = self.hooks.get(hook_id)
            if hook is None:
                raise LookupError(f"no webhook {hook_id}")
            self._enable(hook)
            hook.updated_at = self.clock.now_s()
            return _copy(hook)

    def clear(self) -> None:
        """Remove every subscription and everything waiting to be delivered."""
        with self.lock:
            ids = list(self.hooks)
            self.hooks.clear()
        for hook_id in ids:
            self.dispatcher.forget(hook_id)

    def close(self) -> None:
        self.dispatcher.stop()

    # --- delivery -----------------------------------------------------------------------------

    def on_change(self, change: str, contact: Contact) -> None:
        """Called by the store, under the account lock, after a contact changed: queue it for
        every enabled subscription to that event. Cheap when nobody subscribed."""
        with self.lock:
            wanting = [h.id for h in self.hooks.values() if h.wants(change)]
        if not wanting:
            return
        snapshot = contact_fields(change, contact, self.account)
        self.dispatcher.enqueue(wanting, Entry(change, contact.id, snapshot))

    def failed(self, hook_id: int, at: float, controls: HookControls) -> bool:
        """Count a failed post; True when the hook is now disabled (more than `disable_after`
        failures within `disable_window_s`, this latest one failed)."""
        with self.lock:
            hook = self.hooks.get(hook_id)
            if hook is None or hook.disabled:
                return hook is not None
            since = at - controls.disable_window_s
            hook.failures = [t for t in hook.failures if t > since]
            hook.failures.append(at)
            if len(hook.failures) > controls.disable_after:
                hook.disabled = True
                hook.updated_at = self.clock.now_s()
            return hook.disabled

    def destination_of(self, hook_id: int) -> str | None:
        """Where a hook posts, or None when it is gone or disabled (nothing more is sent)."""
        with self.lock:
            hook = self.hooks.get(hook_id)
            return None if hook is None or hook.disabled else hook.destination

    def state(self) -> dict[str, Any]:
        with self.lock:
            hooks = [{**h.to_json(), "recent_failures": len(h.failures)}
                     for h in sorted(self.hooks.values(), key=lambda h: h.id)]  # fmt: skip
        return {"webhooks": hooks, "controls": asdict(self.dispatcher.controls()),
                "counts": self.dispatcher.counts()}  # fmt: skip

    def _find(self, destination: str) -> Subscription | None:
        return next((h for h in self.hooks.values() if h.destination == destination), None)

    def _enable(self, hook: Subscription) -> None:
        hook.disabled = False
        hook.failures = []


def parse_subscription(body: Any) -> tuple[str, list[str], int]:
    """The body of `POST /api/v4/webhooks` → (destination, settings, sort), or a 400 listing
    every problem (amoCRM's validation-errors shape, one entity)."""
    if body is None or body in ({}, []):
        raise ApiProblem(400, "Request data can not be empty")
    if isinstance(body, list) and len(body) == 1:
        body = body[0]  # the SDK sends one model; an array of one is read the same
    if not isinstance(body, dict):
        raise ApiProblem(400, "Request data must be a webhook (a JSON object)")
    errors: list[dict[str, str]] = []
    destination = _destination(body.get("destination"), errors)
    settings = _settings(body.get("settings"), errors)
    sort = body.get("sort", 1)
    if isinstance(sort, bool) or not isinstance(sort, int):
        errors.append(error("InvalidType", "sort", "This value should be of type int."))
    if errors:
        raise validation_failed([{"request_id": "0", "errors": errors}])
    return destination, settings, int(sort)


def _destination(raw: Any, errors: list[dict[str, str]]) -> str:
    if raw is None or raw == "":
        errors.append(error("NotBlank", "destination", "This value should not be blank."))
        return ""
    if not isinstance(raw, str):
        errors.append(error("InvalidType", "destination", "This value should be of type string."))
        return ""
    parts = urlsplit(raw)
    valid = (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and len(raw) <= MAX_DESTINATION
        and raw == raw.strip()
        and not any(ord(c) < 33 or ord(c) == 127 for c in raw)
    )
    if not valid:
        errors.append(error("InvalidUrl", "destination", "This value is not a valid URL."))
    return raw


def _settings(raw: Any, errors: list[dict[str, str]]) -> list[str]:
    if raw is None or raw == []:
        errors.append(error("NotBlank", "settings", "This value should not be blank."))
        return []
    if not isinstance(raw, list):
        errors.append(error("InvalidType", "settings", "This value should be of type array."))
        return []
    chosen: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or item not in SETTINGS:
            errors.append(error("NotSupportedChoice", f"settings.{index}",
                                "The value you selected is not a valid choice."))  # fmt: skip
        elif item not in chosen:
            chosen.append(item)
    return chosen


def _entity_error(code: str, path: str, detail: str) -> dict[str, Any]:
    return {"request_id": "0", "errors": [error(code, path, detail)]}


def _copy(hook: Subscription) -> Subscription:
    return Subscription(**{**asdict(hook), "settings": list(hook.settings), "failures": []})
