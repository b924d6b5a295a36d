"""`amosync push` as a user runs it: a subprocess against the emulator on 127.0.0.1 and a real
PostgreSQL — killed with SIGKILL in the middle of its writes, then run again. amoCRM must end
up with every local edit exactly once: nothing lost, no duplicate contact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.integration.push_env import PushEnv, push_env

EDITS = 120
CREATES = 40


def write_config(path: Path, env: PushEnv, db: DatabaseConfig, **sync: Any) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in sync.items())
    path.write_text(
        f"""
[amocrm]
base_url = "{env.base_url}"
access_token = "{env.emulator.long_lived_token}"
max_rps = 100
batch_size = 10
timeout_s = 5

[database]
url = "{db.url.reveal()}"
schema = "{db.schema}"

[sync]
push_workers = 2
{extra}
[logging]
format = "json"
""",
        encoding="utf-8",
    )
    return path


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sync", "--config", str(config), *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AMOSYNC_")}


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(config, *args),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )


def make_local_edits(env: PushEnv) -> list[int]:
    ids = sorted(env.emulator.account.contacts)[:EDITS]
    for contact_id in ids:
        env.sql("UPDATE contacts SET name = 'e2e ' || id WHERE id = :id", id=contact_id)
    for contact_id in ids[::3]:  # a second edit of the same contact coalesces
        env.sql("UPDATE contacts SET last_name = 'twice' WHERE id = :id", id=contact_id)
    for n in range(CREATES):
        phone = json.dumps(
            [{"field_code": "PHONE", "values": [{"value": f"+7444{n:07d}", "enum_code": "WORK"}]}]
        )
        temp = env.sql(
            "INSERT INTO contacts (name, custom_fields_values) VALUES (:n, CAST(:cf AS jsonb)) "
            "RETURNING id",
            n=f"e2e new {n % 30}",  # some look-alikes: each still needs its own contact
            cf=phone if n % 2 else None,
        )[0][0]
        if n % 10 == 0:
            env.sql(
                "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :chat)",
                c=temp,
                chat=f"00000000-0000-4000-8000-{n:012d}",
            )
    return ids


def kill_when(
    env: PushEnv, proc: subprocess.Popen[str], method: str, path: str, count: int
) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = [r for r in env.emulator.requests() if r["method"] == method and r["path"] == path]
        if len(seen) >= count:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("push never reached the point to kill it")


def assert_converged(env: PushEnv, ids: list[int]) -> None:
    for contact_id in ids:
        remote = env.remote(contact_id)
        assert remote["name"] == f"e2e {contact_id}"
        assert remote["last_name"] == ("twice" if ids.index(contact_id) % 3 == 0 else
                                       remote["last_name"])  # fmt: skip
        if ids.index(contact_id) % 3 == 0:
            assert remote["last_name"] == "twice"
    names = Counter(c.name for c in env.emulator.account.contacts.values())
    expected = Counter(f"e2e new {n % 30}" for n in range(CREATES))
    assert {k: v for k, v in names.items() if k.startswith("e2e new")} == expected
    local = env.sql("SELECT id, name, sync_status FROM contacts WHERE name LIKE 'e2e new %'")
    remote_ids = {c.id for c in env.emulator.account.contacts.values()
                  if c.name.startswith("e2e new")}  # fmt: skip
    assert {r.id for r in local} == remote_ids
    assert {r.sync_status for r in env.sql("SELECT sync_status FROM contacts")} == {"synced"}
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    links = env.sql("SELECT id, contact_id, chat_id FROM contact_chats")
    assert len(links) == CREATES // 10
    for link in links:
        assert link.id > 0
        assert env.emulator.account.chat_links[link.chat_id].contact_id == link.contact_id


@pytest.mark.parametrize(
    ("method", "path", "count"),
    [
        ("PATCH", "/api/v4/contacts", 3),
        ("POST", "/api/v4/contacts", 1),
        ("POST", "/api/v4/contacts", 3),
        ("POST", "/api/v4/contacts/chats", 1),
    ],
    ids=["during-updates", "first-create", "later-create", "chat-link"],
)
def test_kill_9_during_push_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine, method: str, path: str, count: int
) -> None:
    with push_env(db_config, engine, contacts=EDITS + 10, latency_ms=120) as env:
        env.mirror()
        ids = make_local_edits(env)
        env.emulator.clear_requests()
        config = write_config(tmp_path / "amosync.toml", env, db_config)
        proc = subprocess.Popen(
            command(config, "push"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            killed = kill_when(env, proc, method, path, count)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        assert killed, "the push finished before it could be killed"
        in_flight = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
        if method == "POST":  # killed with a POST sent and its answer not recorded
            kind = "links" if path.endswith("chats") else "creates"
            assert in_flight
            assert in_flight[0][0][kind]["items"]
        env.emulator.set_controls(latency_ms=0)
        done = run(config, "push")
        assert done.returncode == 0, done.stderr
        assert_converged(env, ids)
        runs = env.sql("SELECT status, error FROM sync_runs WHERE kind = 'push' ORDER BY id")
        assert [r.status for r in runs] == ["failed", "succeeded"]  # the next run closed it
        assert runs[0].error.startswith("interrupted")
        again = run(config, "push")
        assert again.returncode == 0, again.stderr
        assert "0 updated, 0 created" in again.stdout


def test_conflicts_list_and_resolve_through_the_cli(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=3) as env:
        env.mirror()
        contact_id = sorted(env.emulator.account.contacts)[0]
        env.sql("UPDATE contacts SET name = 'mine' WHERE id = :id", id=contact_id)
        env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
        config = write_config(tmp_path / "amosync.toml", env, db_config, conflict_policy="manual")
        pushed = run(config, "push")
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip().endswith(
            "; 1 conflict waiting for a person (amosync conflicts list)"
        )
        listed = run(config, "conflicts", "list")
        assert listed.returncode == 0, listed.stderr
        assert f"contact {contact_id} name [manual: waiting]" in listed.stdout
        assert '"mine"' in listed.stdout
        assert '"theirs"' in listed.stdout
        conflict_id = env.sql("SELECT id FROM sync_conflicts")[0][0]
        bad = run(config, "conflicts", "resolve", "999", "--keep", "local")
        assert bad.returncode == 2
        assert "no conflict with id 999" in bad.stderr
        settled = run(config, "conflicts", "resolve", str(conflict_id), "--keep", "local")
        assert settled.returncode == 0, settled.stderr
        applied = run(config, "push")
        assert applied.returncode == 0, applied.stderr
        assert re.search(r": 1 updated, 0 created, 0 chat links, 0 already in amoCRM, 0 rejected, "
                         r"\d+ requests?; 1 conflict settled by a person, applied$",
                         applied.stdout.strip()), applied.stdout  # fmt: skip
        assert env.remote(contact_id)["name"] == "mine"
        assert run(config, "conflicts", "list").stdout.strip() == "no conflicts waiting"


def test_sync_pushes_then_pulls(tmp_path: Path, db_config: DatabaseConfig, engine: Engine) -> None:
    with push_env(db_config, engine, contacts=5) as env:
        config = write_config(tmp_path / "amosync.toml", env, db_config)
        first = run(config, "pull", "--full")
        assert first.returncode == 0, first.stderr
        mine, theirs = sorted(env.emulator.account.contacts)[:2]
        env.sql("UPDATE contacts SET name = 'pushed' WHERE id = :id", id=mine)
        env.emulator.clock.advance(2)
        env.emulator.update_contacts([{"id": theirs, "name": "pulled"}])
        done = run(config, "sync")
        assert done.returncode == 0, done.stderr
        assert "push run" in done.stdout
        assert "1 updated" in done.stdout
        assert env.remote(mine)["name"] == "pushed"
        assert env.row(theirs)["name"] == "pulled"
        assert env.row(mine)["sync_status"] == "synced"
        kinds = [r.kind for r in env.sql("SELECT kind FROM sync_runs ORDER BY id")]
        assert kinds[-2] == "push"
        assert kinds[-1] != "push"
