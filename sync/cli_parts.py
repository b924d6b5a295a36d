"""The `amosync` command line's click plumbing: commands imported only when they run
(`Deferred`), `--config` taken after the command as well as before it, and the imports of a
command that talks to amoCRM (`amo_command_imports`)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from sync.heap import long_lived


@contextmanager
def amo_command_imports() -> Iterator[None]:
    """The imports of a command that talks to amoCRM: the client's TLS context (~30 ms of CA
    certificates) loads in a thread meanwhile (`sync.amo.tls`), the collector waits and what
    they build is frozen after (`sync.heap.long_lived`)."""
    with long_lived():
        from sync.amo.tls import warm_tls

        warm_tls()
        yield


def _late_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    app = ctx.find_root().obj  # the command line's context object (`sync.cli`), made by then
    if value is not None and hasattr(app, "config_path"):
        app.config_path = value


# `amosync status --config f` as well as `amosync --config f status`: every command and group
# below the top also takes the option (hidden from their help, the same as the top one's).
# The top group's callback has made the `_Context` before a command parses its options, and the
# configuration is loaded only when the command runs, so the later option wins.
_LATE_CONFIG = click.Option(
    ["--config", "late_config"],
    type=click.Path(dir_okay=False),
    default=None,
    hidden=True,
    expose_value=False,
    callback=_late_config,
)


def accept_late_config(command: click.Command) -> None:
    """Give `command` (and, for a group, every command below it) the hidden `--config`."""
    if not any(param.name in ("config_path", "late_config") for param in command.params):
        command.params.append(_LATE_CONFIG)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            if not isinstance(sub, Deferred):  # it adds the option when it loads its command
                accept_late_config(sub)


class Deferred(click.Command):
    """A command whose module is imported only when it runs: `amosync emulator` lives in
    `sync.emulator`, which no other command (nor `amosync --help`) should pay to import. Its
    one-line help is given here; parsing, `--help` and the run are the real command's."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name, help=short_help, short_help=short_help)
        self._target = target

    def real(self) -> click.Command:
        module, _, attribute = self._target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        accept_late_config(command)
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return self.real().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self.real().invoke(ctx)
