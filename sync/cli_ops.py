"""Operations commands of the `amosync` CLI: run, resync, status, db grant-reader, demo.

Registered on the group in `sync.cli`; each receives the CLI's context object (`ctx.obj`, which
loads the configuration on first use) through `click.pass_obj`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sync.core.models import RequestStatus
from sync.errors import SyncError


@click.command("run")
@click.pass_obj
def run(app: Any) -> None:
    """Run the daemon: scheduled pull, push and full resync until SIGTERM/SIGINT.

    Several daemons on one database and schema elect one leader (a PostgreSQL advisory lock);
    the others wait as hot standbys. /healthz, /livez and /metrics are served on
    daemon.http_port.
    """
    from sync.daemon.run import run_daemon
    from sync.logs import failure_on_the_last_line

    with failure_on_the_last_line(False):  # the daemon's log is where its failures are told
        run_daemon(app.config)


@click.command("resync")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="Wait up to SECONDS for the daemon to finish the resync.")  # fmt: skip
@click.pass_obj
def resync(app: Any, wait_s: float | None) -> None:
    """Ask the running daemon for a full resync (run it here if no daemon is running)."""
    from sync.daemon.resync import resync as ask
    from sync.progress import progress_bar
    from sync.wiring import amo_client, migrated_engine

    config = app.config
    engine = migrated_engine(config)
    try:
        with progress_bar() as bar:
            outcome = ask(config, engine, lambda: _client(config, engine, amo_client),
                          wait_s=wait_s, progress=bar, note=_note)  # fmt: skip
    finally:
        engine.dispose()
    if outcome.halted is not None:
        halt = outcome.halted
        raise SyncError(f"resync request {outcome.request_id} queued, but the daemon "
                        f"({outcome.leader}) is halted since {halt.get('since')}: "
                        f"{halt.get('reason')}; it serves no request until amosync is "
                        "restarted (after amoCRM lifts the block)")  # fmt: skip
    if outcome.request is None:
        click.echo(f"resync request {outcome.request_id} queued; the daemon ({outcome.leader}) "
                   f"starts it within {config.daemon.requests_poll_s:g} s")  # fmt: skip
        return
    row = outcome.request
    where = "here (no daemon was running)" if outcome.ran_here else f"by {outcome.leader}"
    if row["status"] != RequestStatus.DONE:
        raise SyncError(f"resync request {outcome.request_id} failed {where}: {row['error']}")
    click.echo(f"resync request {outcome.request_id} done {where}: sync_runs id {row['run_id']}")


def _note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


def _client(config: Any, engine: Any, factory: Any) -> Any:
    from sync.cli_stop import STOP

    config.require_amocrm_auth()
    client = factory(config, engine)
    STOP.watch(client.session)  # SIGTERM/SIGINT: the resync run here fails cleanly
    return client


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(app: Any, as_json: bool) -> None:
    """Cursor, lag, last runs, pending changes, open conflicts, errors, and who leads."""
    from sync.db.answer import answered_within, short_command_bound
    from sync.db.engine import store_errors
    from sync.status import gather, render
    from sync.wiring import migrated_engine

    config = app.config

    def read() -> dict[str, Any]:
        engine = migrated_engine(config)
        try:
            with store_errors(config.database), engine.begin() as conn:
                return gather(conn, config)
        finally:
            engine.dispose()

    if config.database.embedded:  # its start (bounded on its own) is not the server's answer
        from sync.db.engine import database_url

        database_url(config.database)
    # a server that answers nothing after the connect must not keep status waiting forever
    data = answered_within(short_command_bound(config.database), config.database, read)
    click.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))


@click.command("grant-reader")
@click.option("--role", default="amocrm_reader", show_default=True, help="Role to create.")
@click.pass_obj
def grant_reader(app: Any, role: str) -> None:
    """Create a read-only role for BI tools (every table but sync_state, which holds tokens).

    Run it again after `db upgrade` to cover new tables. Give people logins in it:
    CREATE ROLE metabase LOGIN PASSWORD '...' IN ROLE amocrm_reader;
    """
    from sync.db.engine import store_errors
    from sync.db.roles import PRIVATE_COLUMNS, PRIVATE_TABLES
    from sync.db.roles import grant_reader as grant
    from sync.wiring import migrated_engine

    config = app.config
    engine = migrated_engine(config)
    try:
        with store_errors(config.database), engine.begin() as conn:
            tables = grant(conn, config.database.schema, role)
    finally:
        engine.dispose()
    hidden = ", ".join(f"{name} ({why})" for name, why in PRIVATE_TABLES.items())
    hidden += "".join(f", {t}.{c}" for t, cols in PRIVATE_COLUMNS.items() for c in cols)
    click.echo(f"role {role}: read-only on {len(tables)} tables and views of schema "
               f"{config.database.schema}; not granted: {hidden}")  # fmt: skip
    click.echo(f"  log in as it: CREATE ROLE bi_user LOGIN PASSWORD '...' IN ROLE {role};")
