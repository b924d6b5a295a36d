"""/metrics text: every counter once, without a `_created` series beside it."""

from __future__ import annotations

from sync.daemon.metrics import Metrics


def test_counters_and_histograms_have_no_created_series() -> None:
    metrics = Metrics()
    metrics.job_runs.labels("pull", "succeeded").inc()
    metrics.job_duration.labels("pull").observe(1.5)
    metrics.rows["pulled"].inc(120)
    text = metrics.exposition()[0].decode()
    assert 'amosync_job_runs_total{job="pull",status="succeeded"} 1.0' in text
    assert "amosync_rows_pulled_total 120.0" in text
    assert "amosync_job_duration_seconds_count" in text
    assert "_created" not in text
