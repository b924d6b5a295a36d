"""CPU time the emulator spends serving one 250-contact page (latency and rate limit off).

    .venv/bin/python bench/emulator_page.py [--contacts 20000] [--pages 200]

Measures `Emulator.handle` (query parsing, selection, rendering, JSON encoding: everything but
the socket) with `time.thread_time`, over several page shapes, and prints median and p95 in ms.
A separate line measures the same over real HTTP (server thread + httpx), CPU of this process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from sync.emulator import Emulator, EmulatorSettings, Request, serve

SHAPES = {
    "plain (order by id)": "limit=250&page={page}",
    "order[updated_at]=asc": "limit=250&page={page}&order[updated_at]=asc",
    "updated_at window + with=": (
        "limit=250&page={page}&order[updated_at]=asc&filter[updated_at][from]=1740000000"
        "&with=leads,customers,catalog_elements"
    ),
}


def measure(emulator: Emulator, query: str, pages: int, headers: dict[str, str]) -> list[float]:
    samples = []
    for page in range(1, pages + 1):
        request = Request("GET", "/api/v4/contacts", query.format(page=page), headers)
        started = time.thread_time()
        response = emulator.handle(request)
        samples.append((time.thread_time() - started) * 1000)
        assert response.status == 200, response.body[:200]
    return samples


def after_writes(emulator: Emulator, pages: int, headers: dict[str, str]) -> list[float]:
    """Each page right after a PATCH: the sorted views are patched, not rebuilt."""
    samples, query = [], SHAPES["order[updated_at]=asc"]
    contact_ids = [c.id for c in emulator.account.view("id", False, False)[:pages]]
    for page, contact_id in enumerate(contact_ids, start=1):
        body = f'[{{"id": {contact_id}, "first_name": "bench"}}]'.encode()
        assert (
            emulator.handle(Request("PATCH", "/api/v4/contacts", "", headers, body)).status == 200
        )
        samples += measure_one(emulator, query.format(page=page), headers)
    return samples


def measure_one(emulator: Emulator, query: str, headers: dict[str, str]) -> list[float]:
    request = Request("GET", "/api/v4/contacts", query, headers)
    started = time.thread_time()
    emulator.handle(request)
    return [(time.thread_time() - started) * 1000]


def over_http(emulator: Emulator, pages: int, headers: dict[str, str]) -> list[float]:
    samples = []
    with serve(emulator) as server, httpx.Client(base_url=server.base_url, headers=headers) as http:
        for page in range(1, pages + 1):
            started = time.process_time()
            response = http.get("/api/v4/contacts", params={"limit": 250, "page": page})
            response.json()
            samples.append((time.process_time() - started) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    p95 = statistics.quantiles(samples, n=20)[-1]
    print(f"{name:<40} median {statistics.median(samples):6.2f} ms   p95 {p95:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--pages", type=int, default=60)
    args = parser.parse_args()
    started = time.perf_counter()
    emulator = Emulator(EmulatorSettings(contacts=args.contacts, rate_limit=None))
    print(f"seeded {args.contacts} contacts in {time.perf_counter() - started:.2f} s")
    headers = {"authorization": f"Bearer {emulator.long_lived_token}", "host": "bench"}
    pages = min(args.pages, args.contacts // 250)
    for query in SHAPES.values():  # build the sorted views once, as any first list does
        measure(emulator, query, 1, headers)
    for name, query in SHAPES.items():
        report(f"handle(): {name}", measure(emulator, query, pages, headers))
    report("handle(): page right after a PATCH", after_writes(emulator, pages, headers))
    report("HTTP round trip, both sides' CPU", over_http(emulator, min(pages, 20), headers))


if __name__ == "__main__":
    main()
