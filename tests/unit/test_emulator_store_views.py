"""The cached sort orders stay exactly what a fresh sort gives, whatever the writes."""

from __future__ import annotations

import random

import pytest

from sync.emulator import Emulator, EmulatorSettings


@pytest.mark.parametrize("tie_break", ["asc", "desc"])
def test_views_match_a_fresh_sort_after_random_writes(tie_break) -> None:
    emulator = Emulator(EmulatorSettings(contacts=400, seed=8, clock_start=1_800_000_000,
                                         clock_frozen=True, tie_break=tie_break))  # fmt: skip
    account = emulator.account
    keys = [(f, d, t) for f in ("id", "updated_at", "created_at") for d in (False, True)
            for t in (False, True)]  # fmt: skip
    for key in keys:
        account.view(*key)  # build every cache before the writes
    rng = random.Random(1)
    for step in range(200):
        live = [c.id for c in account.contacts.values() if not c.is_deleted]
        dead = [c.id for c in account.contacts.values() if c.is_deleted]
        action = rng.choice(("edit", "touch", "delete", "restore", "create"))
        if action == "edit":
            emulator.update_contacts([{"id": rng.choice(live), "name": f"n{step}"}])
        elif action == "touch":
            emulator.touch_contacts([rng.choice(live)])
        elif action == "delete":
            emulator.delete_contact(rng.choice(live))
        elif action == "restore" and dead:
            emulator.restore_contact(rng.choice(dead))
        elif action == "create":
            emulator.create_contacts([{"name": f"new {step}"}])
        emulator.clock.advance(rng.choice((0, 0, 1, 7)))
    for field, descending, deleted in keys:
        cached = [c.id for c in account.view(field, descending, deleted)]
        chosen = [c for c in account.contacts.values() if c.is_deleted == deleted]
        fresh = [c.id for c in sorted(chosen, key=account.sort_key(field, descending))]
        assert cached == fresh, (field, descending, deleted)
