"""`amosync webhooks register | status | unregister` (registered on the group in `sync.cli`).

Each needs `webhooks.public_url` (register also `webhooks.secret` and `webhooks.enabled`); a
missing or malformed one is a configuration error (exit 2). Destinations are printed masked.
`register` warns on stderr about a short secret or a plain-http public_url (allowed, but weak).
"""

from __future__ import annotations

import json
from typing import Any

import click

from sync.config import Config
from sync.config_urls import hook_warnings, public_url
from sync.errors import ConfigProblem


@click.group("webhooks")
def webhooks() -> None:
    """amoCRM webhooks to the daemon: subscribe, show, remove."""


@webhooks.command("register")
@click.pass_obj
def register(app: Any) -> None:
    """Subscribe public_url + /webhooks/amocrm/<secret> to contact add/update/delete/restore
    (an identical subscription is left alone; a disabled one is subscribed again)."""
    from sync.daemon.webhooks.subscription import describe_hook, masked, prefix_of
    from sync.daemon.webhooks.subscription import register as subscribe
    from sync.wiring import connected

    config = app.config  # the keys it needs were checked with it (`sync.cli_context`)
    hooks = config.webhooks
    for warning in hook_warnings(hooks.secret.reveal(), hooks.public_url):
        click.echo(f"amosync: warning: {warning}", err=True)
    with connected(config) as (_engine, client):
        done = subscribe(client, hooks)
    prefix = prefix_of(hooks)
    for old in done.removed:
        click.echo(f"removed a stale subscription (an old secret): "
                   f"{masked(old.destination, prefix)}")  # fmt: skip
    verb = {"unchanged": "already subscribed, left as it is"}.get(done.action, done.action)
    click.echo(f"{hooks.masked_destination}: {verb}")
    click.echo(f"subscription: {describe_hook(done.hook, prefix)}")


@webhooks.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(app: Any, as_json: bool) -> None:
    """The subscription as amoCRM reports it (disabled or not) and when the daemon last
    received a hook."""
    from sync.daemon.webhooks.subscription import (
        LAST_HOOK_KEY,
        hook_status,
        render_status,
        status_json,
    )
    from sync.db.runs import RunStore
    from sync.wiring import connected

    config = app.config
    with connected(config) as (engine, client):
        with engine.connect() as conn:
            last = RunStore(config.database.schema).get_state(conn, LAST_HOOK_KEY)
        found = hook_status(client, config.webhooks, last)
    if as_json:
        click.echo(json.dumps(status_json(found, config.webhooks), indent=2))
    else:
        click.echo(render_status(found, config.webhooks))


@webhooks.command("unregister")
@click.pass_obj
def unregister(app: Any) -> None:
    """Remove the subscription (and any left from an earlier secret) from amoCRM."""
    from sync.daemon.webhooks.subscription import masked, prefix_of
    from sync.daemon.webhooks.subscription import unregister as remove
    from sync.wiring import connected

    config = app.config
    with connected(config) as (_engine, client):
        removed = remove(client, config.webhooks)
    prefix = prefix_of(config.webhooks)
    if not removed:
        click.echo(f"nothing to unregister: no subscription posts to {prefix}…")
    for hook in removed:
        click.echo(f"unregistered: {masked(hook.destination, prefix)} (id {hook.id})")


def webhook_keys_problems(config: Config, need_secret: bool) -> list[ConfigProblem]:
    """The keys a `webhooks` command needs (register: need_secret), every missing one listed;
    checked when the command loads the configuration (`sync.cli_context`)."""
    hooks, problems = config.webhooks, []
    if not hooks.public_url:
        problems.append(ConfigProblem("webhooks.public_url", "not set", "required by `amosync "
                                      "webhooks`: how amoCRM reaches the daemon"))  # fmt: skip
    elif message := public_url(hooks.public_url):  # not checked at load while hooks are off
        where = config.source_of("webhooks.public_url")
        problems.append(ConfigProblem("webhooks.public_url", where, message))
    if need_secret and not hooks.secret:
        problems.append(ConfigProblem("webhooks.secret", "not set",
                                      "required by `amosync webhooks register`"))  # fmt: skip
    if need_secret and not hooks.enabled:
        where = config.key_sources.get("webhooks.enabled", "not set")
        problems.append(ConfigProblem("webhooks.enabled", where, "must be true before "
            "registering: the daemon would answer amoCRM's hooks with 404 and amoCRM "
            "disables a hook that keeps failing"))  # fmt: skip
    return problems
