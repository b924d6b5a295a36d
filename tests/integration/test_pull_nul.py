"""A U+0000 in amoCRM's data (PostgreSQL text and jsonb cannot hold it) is dropped on the way in:
the pull stores the rest, and push sees no local change for it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.pull import run_pull
from tests.integration.push_env import push_env

PHONE = 570_001


def test_a_nul_in_a_name_or_a_value_is_dropped_and_pushes_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=3) as env:
        cid = sorted(env.emulator.account.contacts)[0]
        phone: list[dict[str, Any]] = [{"value": "+7\x00 1", "enum_code": "WORK"}]
        env.emulator.update_contacts([{
            "id": cid, "name": "Ann\x00 Lee",
            "custom_fields_values": [{"field_id": PHONE, "values": phone}],
        }])  # fmt: skip
        run_pull(env.config, env.engine, env.client, full=True)
        row = env.row(cid)
        assert (row["name"], row["sync_status"]) == ("Ann Lee", "synced")
        stored = [f for f in row["custom_fields_values"] if f["field_id"] == PHONE]
        assert stored[0]["values"][0]["value"] == "+7 1"
        values = env.sql(
            "SELECT value FROM contact_custom_field_values WHERE contact_id = :id "
            "AND field_id = :f",
            id=cid,
            f=PHONE,
        )
        assert [v[0] for v in values] == ["+7 1"]
        env.emulator.clear_requests()
        assert env.push().pushed == 0
        env.sql("UPDATE contacts SET first_name = 'Ann' WHERE id = :id", id=cid)
        assert env.push().updated == 1
        (patch,) = env.api("PATCH")
        assert patch["body"] == [{"id": cid, "first_name": "Ann", "request_id": str(cid)}]
