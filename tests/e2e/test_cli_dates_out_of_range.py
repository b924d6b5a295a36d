"""A date amoCRM accepts from any integration but no ISO date can show (milliseconds, a year
before 1 or after 9999) never fails a run: `amosync pull`, `pull --full` and `push` (whose
read-back stores what it wrote as the pull does) exit 0, and the value row holds amoCRM's
number as text (the integrator audit's s16/s20: "ValueError: year 56971 is out of range")."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.e2e.cli import amosync
from tests.e2e.test_cli_pull_contract import _env
from tests.integration.pull_helpers import emulated

DATE, BIRTHDAY = 570_006, 570_011
# amoCRM's number → the row's text
OUT_OF_RANGE = {
    1_735_689_600_000: "1735689600000",  # milliseconds: year 56971
    -62_200_000_000: "-62200000000",  # year 0
    253_402_300_800: "253402300800",  # year 10000
}
IN_RANGE = {
    1_735_689_600: "2025-01-01T00:00:00+00:00",
    -62_135_596_800: "0001-01-01T00:00:00+00:00",
}


def _value(engine: Engine, contact_id: int, field_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(
            sa.text("SELECT value FROM amocrm.contact_custom_field_values "
                    "WHERE contact_id = :c AND field_id = :f"),
            {"c": contact_id, "f": field_id},
        )  # fmt: skip


@pytest.mark.parametrize("args", [("pull",), ("pull", "--full")])
def test_a_pull_stores_dates_out_of_pythons_range_as_amocrms_number(
    db_config: DatabaseConfig, engine: Engine, args: tuple[str, ...]
) -> None:
    with emulated(contacts=5) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        assert amosync("pull", env=env).returncode == 0
        numbers = {**OUT_OF_RANGE, **IN_RANGE}
        ids = emulator.create_contacts([
            {"name": f"date {n}", "custom_fields_values": [
                {"field_id": DATE, "values": [{"value": n}]},
                {"field_id": BIRTHDAY, "values": [{"value": n}]},
            ]} for n in numbers
        ])  # fmt: skip
        result = amosync(*args, env=env)
        assert result.returncode == 0, result.stderr
        for contact_id, (number, text) in zip(ids, numbers.items(), strict=True):
            assert emulator.contact(contact_id)["custom_fields_values"][0]["values"] == [  # type: ignore[index]
                {"value": number}
            ]
            assert _value(engine, contact_id, DATE) == text
            assert _value(engine, contact_id, BIRTHDAY) == text


def test_a_local_date_in_milliseconds_is_pushed_as_written(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The choice for local writes: a date value the product cannot show as ISO is pushed
    faithfully (amoCRM takes it, as it takes it from any integration), never refused or
    changed; the read-back and the next pull keep it as amoCRM's number."""
    with emulated(contacts=5) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        assert amosync("pull", env=env).returncode == 0
        contact_id = min(emulator.account.contacts)
        written = [{"field_id": DATE, "values": [{"value": 1_735_689_600_000}]}]
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE amocrm.contacts SET custom_fields_values = CAST(:v AS jsonb) "
                        "WHERE id = :id"),
                {"v": json.dumps(written), "id": contact_id},
            )  # fmt: skip
        pushed = amosync("push", env=env)
        assert pushed.returncode == 0, pushed.stderr
        remote = emulator.contact(contact_id)
        assert remote is not None
        dates = [f for f in remote["custom_fields_values"] if f["field_id"] == DATE]
        assert dates[0]["values"] == [{"value": 1_735_689_600_000}]
        with engine.connect() as conn:
            status = conn.scalar(
                sa.text("SELECT sync_status FROM amocrm.contacts WHERE id = :id"),
                {"id": contact_id},
            )
        assert status == "synced"
        assert _value(engine, contact_id, DATE) == "1735689600000"
        again = amosync("pull", env=env)
        assert again.returncode == 0, again.stderr
        assert _value(engine, contact_id, DATE) == "1735689600000"
