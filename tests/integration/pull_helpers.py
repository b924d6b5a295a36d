"""Shared set-up for pull's integration tests: emulator + config + exact-state comparison."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.config import Config, DatabaseConfig, SyncConfig
from sync.emulator import Emulator, EmulatorSettings, serve
from sync.pull import PullReport, run_pull
from tests.integration.amo_emulator import amo_config, client_for

WITH = ("leads", "customers", "catalog_elements")


@contextmanager
def emulated(**settings: Any) -> Iterator[tuple[Emulator, str]]:
    values: dict[str, Any] = {"contacts": 300, "seed": 5, "rate_limit": None}
    values.update(settings)
    emulator = Emulator(EmulatorSettings(**values))
    with serve(emulator) as server:
        yield emulator, server.base_url


def make_config(db: DatabaseConfig, base_url: str, token: str, **sync: Any) -> Config:
    values: dict[str, Any] = {"overlap_s": 5, "pull_workers": 4}
    values.update(sync)
    page_size = values.pop("page_size", 50)
    return Config(
        amocrm=amo_config(base_url, token, page_size=page_size),
        database=db,
        sync=SyncConfig(**values),
    )


def pull(config: Config, engine: Engine, emulator: Emulator, **kw: Any) -> PullReport:
    client: AmoClient = client_for(
        emulator, config.amocrm.base_url, page_size=config.amocrm.page_size, workers=4
    )
    with client:
        return run_pull(config, engine, client, **kw)


def amo_state(emulator: Emulator) -> dict[str, Any]:
    """What amoCRM holds, in the shape `db_state` reads from PostgreSQL."""
    account = emulator.account
    with account.lock:
        ids = sorted(account.contacts)
        chats = {
            (c.id, c.contact_id, c.chat_id)
            for c in account.chat_links.values()
            if account.live(c.contact_id) is not None
        }
    live: dict[int, Any] = {}
    deleted = set()
    for cid in ids:
        data = emulator.contact(cid)
        assert data is not None
        if data.get("is_deleted"):
            deleted.add(cid)
        else:
            live[cid] = data
    return {
        "live": {cid: _contact_view(d) for cid, d in live.items()},
        "deleted": deleted,
        "chats": chats,
    }


def _contact_view(data: dict[str, Any]) -> dict[str, Any]:
    embedded = data.get("_embedded") or {}
    cfv = data.get("custom_fields_values") or None
    return {
        "name": data["name"],
        "first_name": data["first_name"],
        "last_name": data["last_name"],
        "responsible_user_id": data["responsible_user_id"],
        "updated_at": data["updated_at"],
        "custom_fields_values": cfv,
        "values": sum(len(f["values"]) for f in cfv or ()),
        "tags": sorted(t["id"] for t in embedded.get("tags", [])),
        "leads": sorted(x["id"] for x in embedded.get("leads", [])),
        "customers": sorted(x["id"] for x in embedded.get("customers", [])),
        "companies": sorted(x["id"] for x in embedded.get("companies", [])),
        "catalog": sorted(x["id"] for x in embedded.get("catalog_elements", [])),
    }


def _grouped(conn: sa.Connection, table: str, column: str) -> dict[int, list[int]]:
    sql = f"SELECT contact_id, array_agg({column} ORDER BY {column}) FROM amocrm.{table} GROUP BY 1"
    return {cid: list(values) for cid, values in conn.execute(sa.text(sql))}


def db_state(engine: Engine) -> dict[str, Any]:
    """What PostgreSQL holds, comparable with `amo_state`."""
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT id, name, first_name, last_name, responsible_user_id, "
                    "extract(epoch FROM updated_at)::bigint AS updated_at, custom_fields_values, "
                    "is_deleted FROM amocrm.contacts"
                )
            )
            .mappings()
            .all()
        )
        groups = {
            "tags": _grouped(conn, "contact_tags", "tag_id"),
            "leads": _grouped(conn, "contact_leads", "lead_id"),
            "customers": _grouped(conn, "contact_customers", "customer_id"),
            "companies": _grouped(conn, "contact_companies", "company_id"),
            "catalog": _grouped(conn, "contact_catalog_elements", "element_id"),
        }
        values_sql = (
            "SELECT contact_id, count(*) FROM amocrm.contact_custom_field_values GROUP BY 1"
        )
        counts = dict(conn.execute(sa.text(values_sql)).all())
        chats = {
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT id, contact_id, chat_id FROM amocrm.contact_chats")
            )
        }
    live = {}
    for row in rows:
        if row["is_deleted"]:
            continue
        cid = row["id"]
        live[cid] = {
            **{
                k: row[k]
                for k in (
                    "name",
                    "first_name",
                    "last_name",
                    "responsible_user_id",
                    "updated_at",
                    "custom_fields_values",
                )
            },
            "values": counts.get(cid, 0),
            **{name: group.get(cid, []) for name, group in groups.items()},
        }
    deleted = {row["id"] for row in rows if row["is_deleted"]}
    return {"live": live, "deleted": deleted, "chats": chats}


def assert_converged(engine: Engine, emulator: Emulator) -> None:
    """PostgreSQL holds exactly amoCRM's live contacts, relations and chats; nothing more."""
    want, have = amo_state(emulator), db_state(engine)
    assert set(have["live"]) == set(want["live"]), (
        f"missing {sorted(set(want['live']) - set(have['live']))[:10]}, "
        f"extra {sorted(set(have['live']) - set(want['live']))[:10]}"
    )
    diffs = [cid for cid in want["live"] if want["live"][cid] != have["live"][cid]]
    assert not diffs, (diffs[:5], want["live"][diffs[0]], have["live"][diffs[0]])
    assert have["deleted"] <= want["deleted"]
    # a tombstoned contact keeps its last known links; amoCRM lists only live contacts' links
    assert {c for c in have["chats"] if c[1] in want["live"]} == want["chats"]


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(sql), params) or 0)
