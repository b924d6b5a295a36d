"""Set-up shared by the push tests: an emulator on 127.0.0.1, a migrated database that mirrors
some of its contacts, a client, and helpers to edit either side."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.clock import Clock, from_unix
from sync.config import Config, DatabaseConfig, SyncConfig
from sync.db.engine import sync_origin
from sync.emulator import Emulator
from sync.push import PushReport, run_push
from tests.integration.amo_emulator import client_for, running
from tests.unit.amo_helpers import EmulatorTime


@dataclass
class PushEnv:
    emulator: Emulator
    base_url: str
    engine: Engine
    client: AmoClient
    config: Config
    clock: Clock | None = None  # the push's; None: the real one

    def push(self, **sync: Any) -> PushReport:
        config = replace(self.config, sync=replace(self.config.sync, **sync))
        return run_push(config, self.engine, self.client, clock=self.clock)

    def emulator_time(self) -> EmulatorTime:
        """Freeze the emulator; the client and push sleep by moving its clock (see
        `EmulatorTime`): lags and windows of seconds pass at once."""
        self.emulator.clock.freeze()
        self.clock = EmulatorTime(self.emulator)
        self.client.session.clock = self.clock
        return self.clock

    def mirror(self, ids: list[int] | None = None) -> list[int]:
        """Store amoCRM's contacts locally as pull would (a stand-in until pull lands)."""
        wanted = ids if ids is not None else sorted(self.emulator.account.contacts)
        with self.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
            sync_origin(conn)
            for contact_id in wanted:
                data = self.emulator.contact(contact_id)
                assert data is not None
                conn.execute(
                    sa.text(
                        "INSERT INTO contacts (id, name, first_name, last_name, "
                        "responsible_user_id, custom_fields_values, updated_at, sync_status) "
                        "VALUES (:id, :name, :first, :last, :resp, CAST(:cf AS jsonb), :at, "
                        "'synced') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, "
                        "first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, "
                        "responsible_user_id = EXCLUDED.responsible_user_id, "
                        "custom_fields_values = EXCLUDED.custom_fields_values, "
                        "updated_at = EXCLUDED.updated_at"
                    ),
                    {
                        "id": contact_id,
                        "name": data["name"],
                        "first": data.get("first_name"),
                        "last": data.get("last_name"),
                        "resp": data.get("responsible_user_id"),
                        "cf": _json(data.get("custom_fields_values")),
                        "at": from_unix(data["updated_at"]),
                    },
                )
        return wanted

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """A local edit, as a person or program would make it (captured by the triggers)."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def row(self, contact_id: int) -> dict[str, Any]:
        rows = self.sql("SELECT * FROM contacts WHERE id = :id", id=contact_id)
        assert rows, f"no local contact {contact_id}"
        return dict(rows[0]._mapping)

    def remote(self, contact_id: int) -> dict[str, Any]:
        data = self.emulator.contact(contact_id)
        assert data is not None
        return data

    def api(self, method: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.emulator.requests()
            if r["method"] == method and r["path"] == "/api/v4/contacts"
        ]


def backdate_creates(env: PushEnv, seconds: float) -> None:
    """Move the sends of the creates in flight `seconds` into the past (a push's real clock:
    the bound after which one amoCRM does not show is sent again has passed)."""
    import json
    from datetime import datetime, timedelta

    rows = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
    value = rows[0][0] if rows else {}
    creates = value.get("creates")
    if not creates:
        return

    def back(stamp: str) -> str:
        return (datetime.fromisoformat(stamp) - timedelta(seconds=seconds)).isoformat()

    creates["sent_at"] = back(creates["sent_at"])
    creates["sent"] = {k: back(v) for k, v in (creates.get("sent") or {}).items()}
    env.sql("UPDATE sync_state SET value = CAST(:v AS jsonb) WHERE key = 'push_in_flight'",
            v=json.dumps(value))  # fmt: skip


def _json(value: Any) -> str | None:
    import json

    return None if value is None else json.dumps(value)


@contextmanager
def push_env(
    db_config: DatabaseConfig, engine: Engine, *, contacts: int = 20, **amo: Any
) -> Iterator[PushEnv]:
    settings = {
        k: amo.pop(k) for k in list(amo) if k in ("latency_ms", "list_lag_s", "rejected_request_id")
    }
    with (
        running(contacts=contacts, trashed_fraction=0.0, **settings) as (emulator, url),
        client_for(emulator, url, reconcile_settle_s=0.05, **amo) as client,
    ):
        config = Config(amocrm=client.config, database=db_config, sync=SyncConfig(push_workers=4))
        yield PushEnv(emulator, url, engine, client, config)


def mirrored_env_fixture(contacts: int = 12) -> Any:
    """A module's `env` fixture: the emulator's contacts mirrored locally, its log cleared."""

    @pytest.fixture
    def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
        with push_env(db_config, engine, contacts=contacts) as env:
            env.mirror()
            env.emulator.clear_requests()
            yield env

    return env


def contact_ids(env: PushEnv) -> list[int]:
    return sorted(env.emulator.account.contacts)
