"""The rate budget, measured where it matters: the emulator's request log (arrival times)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sync.amo.client import AmoClient
from sync.emulator import busiest_window
from tests.integration.amo_emulator import amo_config, running


def test_two_jobs_with_many_threads_never_exceed_7_in_any_second() -> None:
    with running(contacts=50, rate_limit=7, latency_ms=600, block_after_violations=None) as (
        emulator,
        url,
    ):
        config = amo_config(url, emulator.long_lived_token, max_rps=7.0)
        job_a = AmoClient.connect(config)  # two jobs, two client objects: one process budget
        job_b = AmoClient.connect(config)
        assert job_a.session.limiter is job_b.session.limiter
        calls = [job_a.fetch_account, job_b.fetch_account] * 14
        with ThreadPoolExecutor(10) as pool:
            accounts = list(pool.map(lambda call: call(), calls))
        job_a.close()
        job_b.close()
        log = emulator.requests()
        assert len(accounts) == 28
        assert [r["status"] for r in log].count(429) == 0
        assert len(log) == 28
        assert busiest_window(log) <= 7
        # latency overlaps: 28 requests of 600 ms each took far less than 28 x 0.6 s
        span = max(r["arrived_at"] for r in log) - min(r["arrived_at"] for r in log)
        assert span < 6.0
