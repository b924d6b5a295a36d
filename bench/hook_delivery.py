"""How the emulator delivers webhooks: latency, a bulk edit's posts, and what hooks cost a write.

    .venv/bin/python bench/hook_delivery.py [--contacts 5000] [--singles 200] [--hooks 100]

A receiver (http.server in a thread) on 127.0.0.1 answers 200 to every post. Prints:
  1. change → arrival latency of single edits (one hook subscribed, knobs at their defaults);
  2. a bulk edit of every contact: posts, entities per post, seconds until the last arrived;
  3. the median time of one API PATCH with no hooks and with `--hooks` subscriptions, once with
     their posts held back (the write's own cost: snapshot and queue under the account lock) and
     once while this same process posts them (the write never waits for them, but shares the
     GIL with the posting threads).
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import httpx

from sync.emulator import Emulator, EmulatorSettings, serve

ENTITY_ID = re.compile(r"contacts\[\w+\]\[\d+\]\[id\]")
EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cond = threading.Condition()
        self.posts = 0
        self.entities = 0
        self.arrivals: dict[str, float] = {}  # contact id → perf_counter at arrival

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        now = time.perf_counter()
        ids = [v for k, v in parse_qsl(body) if ENTITY_ID.fullmatch(k)]
        with self.server.cond:
            self.server.posts += 1
            self.server.entities += len(ids)
            for contact_id in ids:
                self.server.arrivals.setdefault(contact_id, now)
            self.server.cond.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def wait_entities(receiver: Receiver, count: int, timeout: float = 120) -> None:
    with receiver.cond:
        if not receiver.cond.wait_for(lambda: receiver.entities >= count, timeout):
            raise SystemExit(f"only {receiver.entities} of {count} entities arrived")


def singles(emulator: Emulator, receiver: Receiver, count: int) -> list[float]:
    latencies, ids = [], [c.id for c in emulator.account.view("id", False, False)[:count]]
    for contact_id in ids:
        before = receiver.entities
        started = time.perf_counter()
        emulator.touch_contacts(ids=[contact_id])
        wait_entities(receiver, before + 1)
        latencies.append((receiver.arrivals[str(contact_id)] - started) * 1000)
        receiver.arrivals.clear()
    return latencies


def bulk(emulator: Emulator, receiver: Receiver) -> tuple[int, int, float]:
    ids = [c.id for c in emulator.account.view("id", False, False)]
    posts_before, entities_before = receiver.posts, receiver.entities
    started = time.perf_counter()
    for start in range(0, len(ids), 250):
        emulator.update_contacts(
            [{"id": i, "first_name": "Bulk"} for i in ids[start : start + 250]]
        )
    wait_entities(receiver, entities_before + len(ids))
    return receiver.posts - posts_before, len(ids), time.perf_counter() - started


def patch_ms(http: httpx.Client, ids: list[int]) -> float:
    samples = []
    for contact_id in ids:
        started = time.perf_counter()
        answer = http.patch(f"/api/v4/contacts/{contact_id}", json={"first_name": "P"})
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--hooks", type=int, default=100)
    args = parser.parse_args()
    emulator = Emulator(EmulatorSettings(contacts=args.contacts, rate_limit=None))
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    with (
        serve(emulator) as server,
        httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {emulator.long_lived_token}"},
        ) as http,
    ):
        ids = [c.id for c in emulator.account.view("id", False, False)[:200]]
        without = patch_ms(http, ids)
        subscribe = {"destination": receiver.url("/webhooks/amocrm/bench-0"), "settings": EVENTS}
        assert http.post("/api/v4/webhooks", json=subscribe).status_code == 200
        latencies = sorted(singles(emulator, receiver, args.singles))
        posts, entities, seconds = bulk(emulator, receiver)
        for number in range(1, args.hooks):
            path = f"/webhooks/amocrm/bench-{number}"
            http.post("/api/v4/webhooks", json={"destination": receiver.url(path),
                                                "settings": EVENTS})  # fmt: skip
        with_hooks = patch_ms(http, ids)  # while this process also posts 100 hooks per PATCH
        emulator.webhooks.dispatcher.wait_idle(120)
        emulator.webhooks.dispatcher.set_controls({"delay_ms": 3_600_000})
        queued_only = patch_ms(http, ids)  # the write's own cost: its hooks queued, not sent
    emulator.webhooks.close()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"single edits, 1 hook: change → arrival p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {p95:.1f} ms, max {latencies[-1]:.1f} ms ({len(latencies)} edits)")  # fmt: skip
    print(f"bulk edit of {entities} contacts, 1 hook: {posts} posts "
          f"({entities / posts:.1f} entities each), all arrived in {seconds:.2f} s "
          f"({entities / seconds:,.0f} entities/s)")  # fmt: skip
    print(f"API PATCH of one contact, median of {len(ids)}: {without:.2f} ms with no hook; with "
          f"{args.hooks} hooks {queued_only:.2f} ms while they wait (queueing only), "
          f"{with_hooks:.2f} ms while this process posts them (GIL shared with the "
          f"{args.hooks} posts per PATCH)")  # fmt: skip


if __name__ == "__main__":
    main()
