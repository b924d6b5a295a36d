"""Client throughput under amoCRM's 7 rps limit with slow responses.

Runs the emulator in-process (7 requests per sliding second, counted at arrival; 600 ms latency
by default), then has a small thread pool read contact pages through one AmoClient, the way pull
does. Prints what the server saw: requests, wall time, achieved rps, the most requests in any 1 s
window (must be <= 7) and the number of 429s (must be 0).

    .venv/bin/python bench/client_throughput.py [--requests 120] [--threads 8] [--latency-ms 600]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from sync.amo.client import AmoClient
from sync.config import AmoCrmConfig, LoggingConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, busiest_window, serve
from sync.logs import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=600.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--max-rps", type=float, default=7.0)
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="console"))

    settings = EmulatorSettings(
        contacts=2000,
        seed=1,
        rate_limit=7,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        block_after_violations=None,
    )
    emulator = Emulator(settings)
    with serve(emulator) as server:
        config = AmoCrmConfig(
            base_url=server.base_url,
            access_token=Secret(emulator.long_lived_token),
            max_rps=args.max_rps,
            timeout_s=30.0,
        )
        with AmoClient.connect(config) as client, ThreadPoolExecutor(args.threads) as pool:
            pages = [(n % 40) + 1 for n in range(args.requests)]
            started = time.monotonic()
            list(
                pool.map(lambda n: client.get("/api/v4/contacts", {"page": n, "limit": 50}), pages)
            )
            wall = time.monotonic() - started
        log = emulator.requests()

    arrivals = [r["arrived_at"] for r in log]
    statuses = [r["status"] for r in log]
    print(f"latency            {args.latency_ms:.0f} ms (+ up to {args.jitter_ms:.0f} ms jitter)")
    print(f"threads            {args.threads}")
    print(f"requests made      {len(log)} ({args.requests} wanted)")
    print(f"wall time          {wall:.2f} s")
    print(f"achieved rps       {args.requests / wall:.2f} (client side, completed requests / wall)")
    span = max(arrivals) - min(arrivals)
    print(
        f"arrival rps        {(len(arrivals) - 1) / span:.2f} (server side, first to last arrival)"
    )
    print(f"max in any 1 s     {busiest_window(log)} (limit 7)")
    print(f"429 responses      {statuses.count(429)}")


if __name__ == "__main__":
    main()
