"""The command line's context object (`sync.cli`): the configuration, loaded when a command
first asks for it, together with everything that command needs of it (`NEEDS`: a token to reach
amoCRM, the webhook's keys; with `database.url` unset, the embedded PostgreSQL installed). Every
problem is listed at once, exit 2, before any work starts: no database opened, no embedded
PostgreSQL started or looked for, no request sent.

With `database.url` unset, loading then says on stderr where the data lives (the embedded
PostgreSQL), or refuses (exit 1) when there is none here and the command would not create one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import click

from sync.cli_webhooks import webhook_keys_problems
from sync.config import Config, load_config
from sync.config_checks import auth_required
from sync.errors import ConfigProblem
from sync.logs import configure_logging

# commands that may create the embedded PostgreSQL when database.url is unset and there is none
CREATE_EMBEDDED = frozenset({"demo", "db upgrade", "run"})

Needs = Callable[[Config], list[ConfigProblem]]


def _amocrm(config: Config) -> list[ConfigProblem]:
    return auth_required(config.amocrm)


def _webhooks(*, need_secret: bool) -> Needs:
    def needs(config: Config) -> list[ConfigProblem]:
        return [*auth_required(config.amocrm), *webhook_keys_problems(config, need_secret)]

    return needs


# what each command (by its path below `amosync`) needs of the configuration beyond a valid
# load; `resync` is not here: it needs a token only when no daemon serves the request
NEEDS: dict[str, Needs] = {
    "pull": _amocrm,
    "push": _amocrm,
    "sync": _amocrm,
    "run": _amocrm,
    "webhooks register": _webhooks(need_secret=True),
    "webhooks status": _webhooks(need_secret=False),
    "webhooks unregister": _webhooks(need_secret=False),
}


def command_needs(command: str, config: Config) -> list[ConfigProblem]:
    """What `command` needs of `config`, and the embedded PostgreSQL when database.url is unset."""
    problems = NEEDS[command](config) if command in NEEDS else []
    if config.database.embedded:
        from sync.wiring import embedded_problems

        problems += embedded_problems(config)
    return problems


class CliContext:
    """What every command gets: the config path given on the command line, loaded on demand."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            command = " ".join(click.get_current_context().command_path.split()[1:])
            config = load_config(self.config_path, needs=partial(command_needs, command))
            configure_logging(config.logging)
            if config.database.embedded:
                from sync.wiring import embedded_notice

                notice = embedded_notice(config, may_create=command in CREATE_EMBEDDED)
                click.echo(f"amosync: {notice}", err=True)
            self._config = config
        return self._config
