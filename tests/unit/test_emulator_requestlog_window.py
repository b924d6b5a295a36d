"""The request log's busiest-window count, used to hold the client to 7 requests a second."""

from __future__ import annotations

from sync.emulator import busiest_window


def test_counts_arrivals_within_any_window() -> None:
    times = [0.0, 0.1, 0.2, 0.95, 1.0, 1.5, 3.0]
    assert busiest_window({"arrived_at": t} for t in times) == 4  # 0.0, 0.1, 0.2, 0.95
    assert busiest_window([], 1.0) == 0
    assert busiest_window([{"arrived_at": 5.0}] * 8) == 8


def test_a_request_exactly_one_window_later_starts_a_new_window() -> None:
    entries = [{"arrived_at": t} for t in (0.0, 1.0, 2.0)]
    assert busiest_window(entries) == 1
    assert busiest_window(entries, window_s=1.5) == 2
