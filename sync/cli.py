"""The `amosync` command line.

Exit codes: 0 success, 2 configuration or usage error, 1 any other failure (SIGTERM and Ctrl-C
included: `sync.cli_stop`). Expected failures (`SyncError`) print one clear line on stderr and no
traceback; anything else is a bug, and prints one line too (exit 1): its traceback is a debug
log event (`logging.level = "debug"`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sync.heap import fewer_malloc_arenas, long_lived

with long_lived():  # what a command imports lives as long as the process (sync.heap)
    import click
    from sqlalchemy.exc import DBAPIError

    from sync import cli_ops, cli_webhooks
    from sync.cli_context import CliContext
    from sync.cli_parts import Deferred, accept_late_config, amo_command_imports, usage_line
    from sync.cli_stop import STOP
    from sync.core.models import Winner
    from sync.db.diag import error_line
    from sync.errors import SyncError, UsageError
    from sync.lines import bound_line
    from sync.logs import (
        failure_on_the_last_line,
        get_logger,
        logging_configured,
    )

if TYPE_CHECKING:
    from sync.db.locks import LockWait

F = TypeVar("F", bound=Callable[..., Any])


pass_context = click.make_pass_decorator(CliContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (default: $AMOSYNC_CONFIG, else ./amosync.toml).",
)
@click.version_option(package_name="amocrm-sync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Two-way sync between amoCRM contacts and PostgreSQL."""
    ctx.obj = CliContext(config_path)


@cli.group()
def db() -> None:
    """Database schema: migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_context
def db_upgrade(app: CliContext, revision: str) -> None:
    """Apply migrations to the configured database and schema (running it twice is a no-op)."""
    from sync.db.migrate import upgrade

    before, after = upgrade(app.config.database, revision)
    schema = app.config.database.schema
    if before == after:
        click.echo(f"schema {schema} is up to date at revision {after}")
    else:
        click.echo(f"schema {schema} upgraded from {before or 'empty'} to {after}")


@db.command("downgrade")
@click.argument("revision")
@pass_context
def db_downgrade(app: CliContext, revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every object the sync created)."""
    from sync.db.migrate import downgrade

    before, after = downgrade(app.config.database, revision)
    click.echo(f"schema {app.config.database.schema} downgraded from {before} to {after or 'base'}")


@cli.command("auth")
@click.option("--code", required=True, help="The authorization code from the OAuth redirect.")
@pass_context
def auth(app: CliContext, code: str) -> None:
    """Exchange an OAuth authorization code for tokens and store them in the database."""
    from sync.amo.auth import store_authorization_code
    from sync.amo.client import AmoClient
    from sync.db.tokens import TokenStore
    from sync.wiring import migrated_engine

    config = app.config
    if not config.amocrm.oauth.enabled:
        raise UsageError("`auth` needs [amocrm.oauth] client_id, client_secret and redirect_uri")
    engine = migrated_engine(config)
    try:
        with AmoClient(config.amocrm, None) as client:
            pair = store_authorization_code(
                config.amocrm.oauth, TokenStore(engine), client.session.exchange_token, code.strip()
            )
    finally:
        engine.dispose()
    until = datetime.fromtimestamp(pair.expires_at, UTC).isoformat(timespec="seconds")
    click.echo(
        f"OAuth tokens stored in schema {config.database.schema}; access valid until {until}"
    )


@db.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@pass_context
def db_shell(app: CliContext, psql_args: tuple[str, ...]) -> None:
    """Open psql on the sync's database (the embedded one by default); extra args go to psql."""
    from sync.db.shell import run_shell

    code = run_shell(app.config.database, psql_args)
    if code:
        sys.exit(code)


@cli.command()
@pass_context
def demo(app: CliContext) -> None:
    """See the sync work end to end in seconds: a local amoCRM emulator, the embedded PostgreSQL
    (or the configured database; schema amocrm_demo, rebuilt on every run), a full pull, an SQL
    edit pushed, an amoCRM edit pulled and a conflict."""
    from dataclasses import replace

    from sync.demo import run_demo
    from sync.logs import configure_logging

    config = app.config
    configure_logging(replace(config.logging, level="warning"))  # the story is on stdout
    run_demo(config, click.echo, invoked_as())


@cli.command()
@click.option("--full", is_flag=True, help="Re-read every contact and reconcile deletions.")
@pass_context
def pull(app: CliContext, full: bool) -> None:
    """Pull changed contacts (and deletions) from amoCRM; --full re-reads everything."""
    with amo_command_imports():
        from sync.progress import connecting, progress_bar
        from sync.pull import run_pull
        from sync.wiring import connected

    config = app.config
    with (
        connected(config) as (engine, client),
        progress_bar(connecting(client.session.host)) as bar,
    ):
        STOP.watch(client.session)  # SIGTERM/SIGINT: the run fails cleanly (sync.cli_stop)
        # final_pass: its exit promises every contact that existed throughout the run (CONTRACT)
        report = run_pull(
            config, engine, client, full=full, progress=bar, final_pass=True,
            lock_wait=_lock_wait("pull", PULL_WAIT_S),
        )  # fmt: skip
    click.echo(report.describe())
    _QUICK_EXIT.append(not config.database.embedded)


# How long `pull` (a full resync may hold the lock a while) and `push`/`sync` wait for the run
# lock another process (the daemon) holds before they give up with exit 1.
PULL_WAIT_S = 120.0
PUSH_WAIT_S = 60.0


def _lock_wait(kind: str, seconds: float) -> LockWait:
    from sync.db.locks import LockWait

    def note() -> None:
        click.echo(
            f"waiting up to {seconds:g} s for the {kind} another process is running", err=True
        )

    return LockWait(seconds, note, sleep=STOP.sleep)  # a signal ends the wait


cli.add_command(
    Deferred(
        "emulator",
        "sync.emulator.command:emulator_command",
        "Run the local amoCRM API v4 emulator (contacts, events, fields, account, chats, OAuth).",
    )
)
cli.add_command(cli_ops.run)
cli.add_command(cli_ops.resync)
cli.add_command(cli_ops.status)
cli.add_command(cli_webhooks.webhooks)
db.add_command(cli_ops.grant_reader)


@cli.command()
@pass_context
def push(app: CliContext) -> None:
    """Send pending local changes (updates, new contacts, chat links) to amoCRM."""
    with amo_command_imports():
        from sync.push import run_push
        from sync.wiring import connected

    config = app.config
    with connected(config) as (engine, client):
        STOP.watch(client.session)
        report = run_push(config, engine, client, lock_wait=_lock_wait("push", PUSH_WAIT_S))
    click.echo(report.describe())


@cli.command("sync")
@pass_context
def sync_once(app: CliContext) -> None:
    """One push of local changes, then one incremental pull (also when the push failed,
    unless that makes pulling pointless: `sync.cli_sync`)."""
    with amo_command_imports():
        from sync.cli_sync import push_then_pull
        from sync.progress import connecting, progress_bar
        from sync.pull import run_pull
        from sync.push import run_push
        from sync.wiring import connected

    config = app.config
    with connected(config) as (engine, client):
        STOP.watch(client.session)

        def push() -> Any:
            return run_push(config, engine, client, lock_wait=_lock_wait("push", PUSH_WAIT_S))

        def pull() -> Any:
            with progress_bar(connecting(client.session.host)) as bar:
                return run_pull(
                    config, engine, client, full=False, progress=bar, final_pass=True,
                    lock_wait=_lock_wait("pull", PUSH_WAIT_S),
                )  # fmt: skip

        push_then_pull(push, pull, stopping=lambda: STOP.signal is not None)


@cli.group()
def conflicts() -> None:
    """Review and settle conflicts (the same field edited locally and in amoCRM)."""


@conflicts.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Also show resolved conflicts.")
@pass_context
def conflicts_list(app: CliContext, include_resolved: bool) -> None:
    """Conflicts waiting for a person (or all of them with --all)."""
    from sync.db.outbox import list_conflicts
    from sync.push.conflict_view import render_conflicts
    from sync.wiring import migrated_engine

    engine = migrated_engine(app.config)
    try:
        with engine.connect() as conn:
            rows = list_conflicts(conn, include_resolved=include_resolved)
    finally:
        engine.dispose()
    click.echo(render_conflicts(rows, include_resolved=include_resolved))


@conflicts.command("resolve")
@click.argument("conflict_id", type=int)
@click.option(
    "--keep",
    type=click.Choice([w.value for w in Winner]),
    required=True,
    help="The side that wins.",
)
@pass_context
def conflicts_resolve(app: CliContext, conflict_id: int, keep: str) -> None:
    """Settle a waiting conflict; the next push applies it."""
    from sync.db.outbox import set_winner
    from sync.wiring import migrated_engine

    engine = migrated_engine(app.config)
    try:
        with engine.begin() as conn:
            set_winner(conn, conflict_id, Winner(keep))
    finally:
        engine.dispose()
    click.echo(f"conflict {conflict_id}: {keep} wins; the next push applies it")


def invoked_as() -> str:
    """How to run this amosync again from here: `amosync` when the PATH finds this very one,
    else its path (`.venv/bin/amosync` after `make demo`), or `python -m sync`."""
    script = Path(sys.argv[0])
    if script.name == "__main__.py":
        return f"{_relative(Path(sys.executable))} -m sync"
    found = shutil.which("amosync")
    if found and Path(found).resolve() == script.resolve():
        return "amosync"
    return _relative(script)


def _relative(path: Path) -> str:
    absolute = Path(os.path.abspath(path))  # normalises `..` too
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


# A command whose work is all done and closed (the pull: its threads joined, its connections
# closed, its line printed) lets the process end without tearing the interpreter down: freeing
# a run's objects and ~800 modules one by one took 0.5-1 s on a loaded 2-core machine, on top of
# a full resync of 25 s. Not with the embedded PostgreSQL (its library may stop the server from
# an exit handler).
_QUICK_EXIT: list[bool] = []


for _command in cli.commands.values():
    if not isinstance(_command, Deferred):
        accept_late_config(_command)


# a group called without its command prints its help (click >= 8.2 raises this; 8.1 exits 0)
_HELP_INSTEAD: tuple[type[click.ClickException], ...] = tuple(
    filter(None, [getattr(click.exceptions, "NoArgsIsHelpError", None)])
)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; turn expected errors into one line and an exit code."""
    fewer_malloc_arenas()  # before any thread starts (see sync.heap)
    try:
        STOP.install()  # SIGTERM/SIGINT: a clean, bounded stop, exit 1 (sync.cli_stop)
        with failure_on_the_last_line():  # a failure's error is said once, by the line below
            cli.main(args=argv, prog_name="amosync", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click's form of Ctrl-C (or EOF)
        click.echo(f"amosync: {STOP.explain('interrupted')}", err=True)  # before the handlers
        sys.exit(1)
    except _HELP_INSTEAD as exc:  # `amosync` or `amosync db` alone: the help, as click shows it
        exc.show()
        sys.exit(2)
    except click.UsageError as exc:  # one line, not click's Usage/Try/Error block
        click.echo(f"amosync: {usage_line(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"amosync: {bound_line(' '.join(exc.format_message().split()))}", err=True)
        sys.exit(2)
    except SyncError as exc:
        click.echo(f"amosync: {STOP.explain(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except DBAPIError as exc:  # a database failure no command wrapped: still one line, no SQL
        click.echo(f"amosync: {STOP.explain(error_line(exc))}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a bug: one line too; its traceback a debug event
        if logging_configured():  # not before the config was read (it names the level)
            get_logger("sync.cli").debug("unexpected_error", exc_info=exc)
        line = f"unexpected error (a bug; logging level debug shows where): {error_line(exc)}"
        click.echo(f"amosync: {STOP.explain(line)}", err=True)
        sys.exit(1)
    if argv is None and _QUICK_EXIT and all(_QUICK_EXIT):  # the console script, not a caller
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(0)
