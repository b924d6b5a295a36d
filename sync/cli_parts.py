"""The `amosync` command line's click plumbing: commands imported only when they run
(`Deferred`), `--config` taken after the command as well as before it, the imports of a
command that talks to amoCRM (`amo_command_imports`), and click's usage errors as one line
(`usage_line`)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from sync.heap import long_lived
from sync.lines import bound_line


@contextmanager
def amo_command_imports() -> Iterator[None]:
    """The imports of a command that talks to amoCRM: the client's TLS context (~30 ms of CA
    certificates) loads in a thread meanwhile (`sync.amo.tls`), the collector waits and what
    they build is frozen after (`sync.heap.long_lived`)."""
    with long_lived():
        from sync.amo.tls import warm_tls

        warm_tls()
        yield


def usage_line(exc: click.UsageError) -> str:
    """A usage error (an unknown option or command, a missing argument) as one line, where click
    prints its Usage/Try/Error block: what is wrong and where help is.

        no such option '--bogus' (amosync pull --help lists the options)
    """
    # an unknown option or command (click >= 8.4 for commands) carries click's suggestions,
    # worded here in the line's own way
    possible = getattr(exc, "possibilities", None)
    message = exc.message if hasattr(exc, "possibilities") else exc.format_message()
    text = " ".join(message.split()).removesuffix(".")
    if text[:1].isupper() and not text[1:2].isupper():  # "No such …", not an acronym
        text = text[0].lower() + text[1:]
    if possible:
        text += f", did you mean {' or '.join(map(repr, possible))}?"
    if isinstance(exc, click.NoSuchOption):
        what = "lists the options"
    elif exc.ctx is not None and isinstance(exc.ctx.command, click.Group):
        what = "lists the commands"
    else:
        what = "shows the usage"
    return bound_line(f"{text} ({exc.ctx.command_path if exc.ctx else 'amosync'} --help {what})")


def _late_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    app = ctx.find_root().obj  # the command line's context object (`sync.cli`), made by then
    if value is not None and hasattr(app, "config_path"):
        app.config_path = value


# `amosync status --config f` as well as `amosync --config f status`: every command and group
# below the top also takes the option (hidden from their help, the same as the top one's).
# The top group's callback has made the `CliContext` before a command parses its options, and the
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
