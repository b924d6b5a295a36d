"""Many clients at once: no 500s, no torn state, sort orders still exact afterwards."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
from emulator_helpers import SSL, live_ids

from sync.emulator import Emulator, RunningServer


def worker(seed: int, base_url: str, token: str, ids: list[int]) -> list[int]:
    rng = random.Random(seed)
    statuses = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(verify=SSL, base_url=base_url, headers=headers, timeout=10) as http:
        for step in range(40):
            if rng.random() < 0.5:
                batch = [{"id": i, "first_name": f"w{seed}-{step}"} for i in rng.sample(ids, 5)]
                statuses.append(http.patch("/api/v4/contacts", json=batch).status_code)
            else:
                params = {"page": rng.randint(1, 3), "limit": 50, "order[updated_at]": "desc"}
                statuses.append(http.get("/api/v4/contacts", params=params).status_code)
    return statuses


def test_parallel_readers_and_writers(server: RunningServer, emulator: Emulator) -> None:
    emulator.clock.unfreeze()
    ids = live_ids(emulator)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(worker, seed, server.base_url, emulator.long_lived_token, ids)
                   for seed in range(6)]  # fmt: skip
        statuses = [s for f in futures for s in f.result()]
    assert set(statuses) == {200}
    account = emulator.account
    for descending in (False, True):
        cached = [c.id for c in account.view("updated_at", descending, False)]
        chosen = [c for c in account.contacts.values() if not c.is_deleted]
        fresh = sorted(chosen, key=account.sort_key("updated_at", descending))
        assert cached == [c.id for c in fresh]
