"""A new contact amoCRM cannot confirm, as an operator meets it through the CLI: `amosync push`
exits 1 and says how to withdraw it, `amosync status` lists it, a second push still sends the
other edits and never the create, and after `DELETE FROM contacts` the push exits 0 and a pull
brings amoCRM's contact in once (amoCRM ignores `order[id]` and every filter; its answer to
the POST left the contact out)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import push_env


def test_an_unconfirmed_create_is_shown_and_withdrawn_through_the_cli(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=4) as env:
        env.mirror()
        env.emulator.set_controls(
            id_order_ignored=True, api_filter_enabled=False, write_answer="short"
        )
        config = write_config(tmp_path / "amosync.toml", env, db_config)
        (temp,) = env.sql("INSERT INTO contacts (name) VALUES ('Unconfirmed') RETURNING id")[0]

        first = run(config, "push")
        assert first.returncode == 1
        assert f"To withdraw them: DELETE FROM contacts WHERE id IN ({temp})" in first.stderr

        shown = run(config, "status")
        assert shown.returncode == 0, shown.stderr
        assert f"`DELETE FROM contacts WHERE id = {temp}` withdraws it" in shown.stdout
        data = json.loads(run(config, "status", "--json").stdout)
        assert [c["id"] for c in data["unconfirmed_creates"]] == [temp]

        other = sorted(env.emulator.account.contacts)[0]
        env.sql("UPDATE contacts SET name = 'still pushed' WHERE id = :id", id=other)
        second = run(config, "push")
        assert second.returncode == 1
        assert env.remote(other)["name"] == "still pushed"
        assert len(env.api("POST")) == 1

        env.sql("DELETE FROM contacts WHERE id = :id", id=temp)
        third = run(config, "push")
        assert third.returncode == 0, third.stderr
        assert len(env.api("POST")) == 1
        assert json.loads(run(config, "status", "--json").stdout)["unconfirmed_creates"] == []

        pulled = run(config, "pull", "--full")
        assert pulled.returncode == 0, pulled.stderr
        remote = [c.id for c in env.emulator.account.contacts.values() if c.name == "Unconfirmed"]
        local = [r.id for r in env.sql("SELECT id FROM contacts WHERE name = 'Unconfirmed'")]
        assert len(remote) == 1
        assert local == remote
