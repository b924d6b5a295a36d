"""The account's filter flag remembered between processes (`sync.pull.filter_flag`): an
`amosync pull` trusts a flag read less than an hour ago, as the daemon's polls do; a full
resync reads it always; an answer that shows the filter ignored wins over a remembered flag
and is remembered in its turn."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.runs import RunStore
from sync.emulator import Emulator
from sync.pull.filter_flag import FILTER_FLAG
from sync.pull.memo import ACCOUNT_INTERVAL_S
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull

ACCOUNT = "GET /api/v4/account"


def _accounts(emulator: Emulator) -> int:
    return Counter(f"{r['method']} {r['path']}" for r in emulator.requests())[ACCOUNT]


def _stored(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        value = RunStore("amocrm").get_state(conn, FILTER_FLAG)
    assert value is not None
    return value


def _age(engine: Engine, seconds: float, **changes: object) -> None:
    """The stored flag as if read `seconds` earlier (and with `changes`)."""
    value = _stored(engine)
    value.update(changes, read_at=float(value["read_at"]) - seconds)  # type: ignore[arg-type]
    with engine.begin() as conn:
        RunStore("amocrm").set_state(conn, FILTER_FLAG, value)


def test_a_cli_pull_trusts_a_flag_read_within_the_hour_and_a_full_resync_reads_it(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=120) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)  # the first run is full: it reads the flag
        assert _stored(engine)["enabled"] is True
        emulator.clear_requests()
        emulator.update_contacts([{"id": min(emulator.account.contacts), "name": "edited"}])
        assert pull(config, engine, emulator, final_pass=True).upserted == 1
        assert _accounts(emulator) == 0
        _age(engine, ACCOUNT_INTERVAL_S + 1)  # an hour later: read again
        emulator.clear_requests()
        pull(config, engine, emulator, final_pass=True)
        assert _accounts(emulator) == 1
        _age(engine, 0, base_url="https://other.amocrm.ru")  # another account's: read again
        emulator.clear_requests()
        pull(config, engine, emulator, final_pass=True)
        assert _accounts(emulator) == 1
        _age(engine, -60)  # read "in the future" (a clock set back): not trusted
        emulator.clear_requests()
        pull(config, engine, emulator, final_pass=True)
        assert _accounts(emulator) == 1
        emulator.clear_requests()
        pull(config, engine, emulator, full=True)  # a full resync asks whatever is stored
        assert _accounts(emulator) == 1
        assert_converged(engine, emulator)


def test_filters_turned_off_within_the_hour_are_caught_by_the_answers_and_remembered(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=200) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        emulator.clock.advance(60)
        ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
        emulator.update_contacts([{"id": i, "name": "X"} for i in ids[:10]])
        emulator.set_controls(api_filter_enabled=False)  # the stored flag still says on
        emulator.clear_requests()
        report = pull(config, engine, emulator, final_pass=True)
        assert report.mode == "descending"
        assert _accounts(emulator) == 0
        assert _stored(engine)["enabled"] is False
        assert_converged(engine, emulator)
        emulator.clock.advance(60)
        emulator.update_contacts([{"id": i, "name": "Y"} for i in ids[10:15]])
        emulator.clear_requests()
        report = pull(config, engine, emulator, final_pass=True)
        assert report.mode == "descending"  # the remembered off: straight to the fallback
        assert _accounts(emulator) == 0
        assert_converged(engine, emulator)
