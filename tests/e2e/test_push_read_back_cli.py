"""`amosync push` as a user runs it leaves the contacts it wrote as amoCRM holds them, before
any pull (`sync.push.readback`): a created contact with amoCRM's columns and value rows, an
edit in amoCRM's shape (the audit's `afterpush.sh` and `cfecho.sh`)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import push_env

PHONE = [{"field_code": "PHONE", "values": [{"value": "+7999", "enum_code": "WORK"}]}]
SET_CF = "UPDATE contacts SET custom_fields_values = CAST(:v AS jsonb) WHERE id = :id"


def test_amosync_push_leaves_amocrms_version(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=3) as env:
        edited = env.mirror()[0]
        env.sql(SET_CF, id=edited, v=json.dumps(PHONE))
        env.sql("INSERT INTO contacts (name, custom_fields_values) VALUES ('AfterPush', "
                "CAST(:v AS jsonb))", v=json.dumps(PHONE))  # fmt: skip
        done = run(write_config(tmp_path / "amosync.toml", env, db_config), "push")
        assert done.returncode == 0, done.stderr
        ((created,),) = env.sql("SELECT id FROM contacts WHERE name = 'AfterPush'")
        for contact_id in (edited, created):
            row, remote = env.row(contact_id), env.remote(contact_id)
            assert row["sync_status"] == "synced"
            assert row["custom_fields_values"] == remote["custom_fields_values"]
            assert int(row["updated_at"].timestamp()) == remote["updated_at"]
            for column in ("created_at", "created_by", "account_id", "responsible_user_id"):
                assert row[column] is not None, column
            assert env.sql(
                "SELECT field_id, value, enum_id FROM contact_custom_field_values "
                "WHERE contact_id = :id AND field_id = 570001",
                id=contact_id,
            ) == [(570_001, "+7999", 840_001)]
