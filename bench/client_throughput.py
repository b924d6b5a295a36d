"""Client throughput under amoCRM's 7 rps limit with slow responses.

Runs the emulator in-process (7 requests per sliding second, counted at arrival; 600 ms latency
by default), then has a small thread pool read contact pages through one AmoClient, the way pull
does. Prints what the server saw: requests, wall time, achieved rps, the most requests in any 1 s
window (must be <= 7), the number of 429s (must be 0) and the tightest spans of 8 consecutive
arrivals (each must exceed 1 s; the client schedules them 1 s + margin apart, so the span less
1 s is what the margin had left after the jitter between "bytes left" and "the server counted").

    .venv/bin/python bench/client_throughput.py [--requests 120] [--threads 8] [--latency-ms 600]
        [--margin-s 0.08] [--emulator-process]

`--emulator-process` runs `amosync emulator` in a process of its own, as amoCRM is: in this
process its threads count arrivals only when they get the GIL from the client's threads, so
under CPU load the server's count lags the bytes by more than a real network would.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sync.amo.client import AmoClient
from sync.amo.ratelimit import DEFAULT_MARGIN_S, RateLimiter
from sync.config import AmoCrmConfig, LoggingConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, busiest_window, serve
from sync.logs import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pull_full import free_port, launch_emulator, server_log

TOKEN = "bench-token"


@contextmanager
def emulated(
    args: argparse.Namespace,
) -> Iterator[tuple[str, str, Callable[[], list[dict[str, Any]]]]]:
    """The emulator in this process (its threads share the client's GIL), or with
    `--emulator-process` in its own, as amoCRM is: (base URL, token, its request log)."""
    if args.emulator_process:
        port = free_port()
        options = ["--contacts", "2000", "--latency-ms", str(args.latency_ms),
                   "--jitter-ms", str(args.jitter_ms), "--rate-limit", "7",
                   "--token", TOKEN, "--block-after", "1000000"]  # fmt: skip
        proc = launch_emulator(port, options)
        try:
            yield f"http://127.0.0.1:{port}", TOKEN, lambda: server_log(port)
        finally:
            proc.terminate()
            proc.wait(30)
        return
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
        yield server.base_url, emulator.long_lived_token, emulator.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=600.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--max-rps", type=float, default=7.0)
    parser.add_argument(
        "--margin-s", type=float, default=DEFAULT_MARGIN_S, help="the client limiter's margin"
    )
    parser.add_argument(
        "--emulator-process", action="store_true", help="run the emulator in its own process"
    )
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="console"))

    with emulated(args) as (base_url, token, requests):
        config = AmoCrmConfig(
            base_url=base_url, access_token=Secret(token), max_rps=args.max_rps, timeout_s=30.0
        )
        limiter = RateLimiter(args.max_rps, margin_s=args.margin_s)
        client = AmoClient.connect(config, limiter=limiter)
        with client, ThreadPoolExecutor(args.threads) as pool:
            pages = [(n % 40) + 1 for n in range(args.requests)]
            started = time.monotonic()
            list(
                pool.map(lambda n: client.get("/api/v4/contacts", {"page": n, "limit": 50}), pages)
            )
            wall = time.monotonic() - started
        log = requests()

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
    print(f"margin             {args.margin_s * 1000:.0f} ms (limiter: {limiter})")
    times = sorted(arrivals)
    apart = 7  # 8 arrivals: the 1st and the 8th must be more than 1 s apart at 7 rps
    spans = sorted(times[n + apart] - times[n] for n in range(len(times) - apart))
    print(f"tightest 8 spans   {', '.join(f'{s * 1000:.0f}' for s in spans[:5])} ms (> 1000)")


if __name__ == "__main__":
    main()
