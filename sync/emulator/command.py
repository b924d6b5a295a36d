"""`amosync emulator`: run the emulator on a port until Ctrl-C / SIGTERM."""

from __future__ import annotations

import gc
import signal
import threading
import time
from types import FrameType

import click

from sync.emulator.core import Emulator
from sync.emulator.hook_controls import HookControls, parse_assignments
from sync.emulator.server import start
from sync.emulator.settings import EmulatorSettings

# new containers between young collections in the emulator process (CPython's default: 700);
# the engine's bulk work uses the same figure (`sync.heap`, which the emulator may not import)
YOUNG_THRESHOLD = 50_000


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8899, show_default=True, help="Port (0 = any free port).")
@click.option("--contacts", default=1000, show_default=True, help="Seeded contacts.")
@click.option("--seed", default=1, show_default=True, help="Seed for deterministic data.")
@click.option(
    "--spread-days", default=365.0, show_default=True,
    help="Seeded created_at/updated_at spread over this many days before the data epoch.",
)  # fmt: skip
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every API answer.")
@click.option("--jitter-ms", default=0.0, show_default=True, help="Plus uniform(0, jitter).")
@click.option(
    "--arrival-delay-ms", default=0.0, show_default=True,
    help="Network delay uniform(0, N) before a request is counted (arrival jitter).",
)  # fmt: skip
@click.option(
    "--rate-limit", default=7.0, show_default=True, help="Requests/s per client IP; 0 = off."
)
@click.option("--rate-limit-body", type=click.Choice(["json", "html"]), default="json")
@click.option("--block-after", default=30, show_default=True, help="429s before a 403 block.")
@click.option("--block-window-s", default=0.0, help="Count only 429s of the last N s (0 = all).")
@click.option("--account-rate-limit", default=0.0, help="Requests/s across all clients; 0 = off.")
@click.option(
    "--token",
    default=None,
    envvar="AMOSYNC_EMULATOR_TOKEN",
    help="Long-lived token to accept (default: minted; or $AMOSYNC_EMULATOR_TOKEN).",
)
@click.option(
    "--client-id",
    default=EmulatorSettings.client_id,
    show_default=True,
    help="The OAuth client id the token endpoint expects.",
)
@click.option(
    "--client-secret",
    default=EmulatorSettings.client_secret,
    envvar="AMOSYNC_EMULATOR_CLIENT_SECRET",
    help="OAuth client secret; prefer $AMOSYNC_EMULATOR_CLIENT_SECRET (argv is visible in ps).",
)
@click.option(
    "--redirect-uri",
    default=EmulatorSettings.redirect_uri,
    show_default=True,
    help="The OAuth redirect URI the token endpoint expects.",
)
@click.option("--auth-mode", type=click.Choice(["any", "long_lived", "oauth"]), default="any")
@click.option("--access-token-ttl", default=86_400, show_default=True, help="Seconds.")
@click.option("--token-max-requests", default=0, help="OAuth access tokens die after N; 0 = never.")
@click.option("--filters-off", is_flag=True, help="Ignore every filter[...] (alpha accounts).")
@click.option(
    "--admin-key",
    default=None,
    envvar="AMOSYNC_EMULATOR_ADMIN_KEY",
    help="Require X-Emulator-Key on /_emulator/ (or $AMOSYNC_EMULATOR_ADMIN_KEY).",
)
@click.option("--list-lag-s", default=0.0, help="Lists show each contact as of N s ago.")
@click.option(
    "--webhook",
    "webhook",
    multiple=True,
    metavar="KEY=VALUE",
    help="A webhook delivery knob, e.g. delay_ms=500, loss_rate=0.1 (repeatable).",
)
def emulator_command(  # noqa: PLR0917 - click passes every option positionally by name
    host: str,
    port: int,
    contacts: int,
    spread_days: float,
    seed: int,
    latency_ms: float,
    jitter_ms: float,
    arrival_delay_ms: float,
    rate_limit: float,
    rate_limit_body: str,
    block_after: int,
    block_window_s: float,
    account_rate_limit: float,
    token: str | None,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    auth_mode: str,
    access_token_ttl: int,
    token_max_requests: int,
    filters_off: bool,
    admin_key: str | None,
    list_lag_s: float,
    webhook: tuple[str, ...],
) -> None:
    """Run the local amoCRM API v4 emulator (contacts, events, fields, account, chats, OAuth)."""
    settings = EmulatorSettings(
        client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri,
        contacts=contacts, seed=seed, spread_s=max(1, round(spread_days * 86_400)),
        latency_ms=latency_ms, jitter_ms=jitter_ms, arrival_delay_ms=arrival_delay_ms,
        rate_limit=rate_limit or None, rate_limit_body=rate_limit_body,  # type: ignore[arg-type]
        block_after_violations=block_after or None, long_lived_token=token,
        block_window_s=block_window_s or None, account_rate_limit=account_rate_limit or None,
        auth_mode=auth_mode,  # type: ignore[arg-type]
        access_token_ttl_s=access_token_ttl, token_max_requests=token_max_requests or None,
        api_filter_enabled=not filters_off,
        admin_key=admin_key, list_lag_s=list_lag_s, webhooks=_hook_controls(webhook),
    )  # fmt: skip
    started = time.perf_counter()
    emulator = Emulator(settings)
    # the seeded account lives as long as the process: keep its objects out of every cyclic
    # collection, which would otherwise walk them all each time (a CPU cost per request)
    gc.freeze()
    # an answer's JSON (a list page: ~10,000 dicts and lists) is freed by reference counting;
    # at the default threshold (700) rendering one ran ~15 young collections over it
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    try:
        server = start(emulator, host, port)
    except OSError as exc:  # the port is taken or not ours to bind: one line, no traceback
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
        ) from exc
    _announce(emulator, server.base_url, time.perf_counter() - started)
    _wait_for_signal()
    server.stop()
    click.echo("emulator stopped")


def _hook_controls(pairs: tuple[str, ...]) -> HookControls:
    try:
        return parse_assignments(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--webhook") from exc


def _announce(emulator: Emulator, base_url: str, seconds: float) -> None:
    settings = emulator.settings
    click.echo(f"amoCRM emulator listening on {base_url} ({settings.contacts} contacts, "
               f"seed {settings.seed}, ready in {seconds:.1f}s)")  # fmt: skip
    click.echo(f"base_url={base_url}")
    click.echo(f"access_token={emulator.long_lived_token}")
    click.echo(f"oauth_client_id={settings.client_id}")
    click.echo(f"oauth_client_secret={settings.client_secret}")
    click.echo(f"oauth_redirect_uri={settings.redirect_uri}")
    click.echo(f"oauth_code={emulator.issue_auth_code()}")
    click.echo(f"admin={base_url}/_emulator/state")


def _wait_for_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
