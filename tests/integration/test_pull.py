"""Pull against the emulator (real HTTP) and a real PostgreSQL: convergence and its invariants."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull


def test_first_pull_is_a_full_resync_and_converges(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        report = pull(config, engine, emulator)
        assert report.kind == "full"
        assert_converged(engine, emulator)
        again = pull(config, engine, emulator)
        assert again.kind == "pull"
        assert again.upserted == 0
        assert_converged(engine, emulator)
