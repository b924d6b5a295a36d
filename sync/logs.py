"""Logging with structlog: JSON lines for machines, the console renderer for people.

Event names are stable snake_case past tense (`pull_page_stored`); each run ends with one summary
event. A one-shot command's failure is said once, by its last line (`log_failure`). `redact`
runs on every event, so a token can reach a log line only if it hides in a key or string this
module does not know about, and even then bearer tokens and URL secrets are masked.
It also cuts the `[SQL: …]` and `[parameters: …]` sections and `DETAIL:` lines of database
errors out of every string (tracebacks included): they carry contacts' e-mails and phones.
`bound` then cuts every line of a value to `sync.lines.LINE_LIMIT` characters (debug events keep
the whole text), and the console renderer keeps each rendered line within it too.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

from sync.config import LoggingConfig, Secret
from sync.lines import LINE_LIMIT, bound_lines
from sync.redaction import HIDDEN, hide_url_secrets


@contextmanager
def unimportable(*names: str) -> Iterator[None]:
    """Within the block, `import NAME` fails for each of `names` not imported yet: for a
    library that imports an optional package it can do without."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not here"
    try:
        yield
    finally:
        for name in hidden:
            del sys.modules[name]


# structlog's `dev` and `tracebacks` modules import rich (about 70 modules with pygments, ~35 ms
# of every command's start-up) whenever it is installed, for pretty tracebacks these logs never
# use: `format_exc_info` below turns an exception into text before any renderer sees it. Hidden
# for this one import, they fall back to plain tracebacks; the progress bar (`sync.progress`)
# still imports rich when it draws on a terminal.
with unimportable("rich"):
    import structlog

REDACTED = HIDDEN
# Keys whose values are secrets wherever they appear, at any depth.
_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|authorization|api_key|apikey|cookie|code_verifier)$",
    re.IGNORECASE,
)
# Secrets that may hide inside free text: bearer tokens, JWTs, query secrets (and, in
# `redact_text`, what `sync.redaction` hides of URLs: the `describe` of a database URL).
_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(r"(?i)((?:access_token|refresh_token|client_secret|code)=)[^&\s\"']+"),
        r"\1" + REDACTED,
    ),
    # the daemon's hook path ends in the webhook secret
    (re.compile(r"(/webhooks/amocrm/)[^/?#\s\"']+"), r"\1" + REDACTED),
)


# What SQLAlchemy and psycopg append to a database error: the statement, its parameters (contact
# e-mails and phones), the DETAIL line with key values, the link to SQLAlchemy's docs.
_SQL_SECTIONS = (
    (
        re.compile(r"\[SQL: .*?(?=\n\[parameters: |\n\(Background on this error|\Z)", re.DOTALL),
        "[SQL removed]",
    ),
    (re.compile(r"\[parameters: .*?(?=\n\(Background on this error|\Z)", re.DOTALL), ""),
    (re.compile(r"\n?\(Background on this error at: [^)\s]*\)"), ""),
    (re.compile(r"^DETAIL: .*\n?", re.MULTILINE), ""),
)


def redact_text(text: str) -> str:
    """Mask secrets that appear inside a string, and drop SQL and its parameters."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return strip_sql(hide_url_secrets(text))


def strip_sql(text: str) -> str:
    """Safety net behind `sync.db.diag.error_line`: no statement or parameters in any log line,
    wherever a database error's full text slipped in (a message, a traceback)."""
    if "[SQL: " not in text and "[parameters: " not in text and "DETAIL: " not in text:
        return text
    for pattern, replacement in _SQL_SECTIONS:
        text = pattern.sub(replacement, text)
    return text.rstrip("\n") if "\n" in text else text


def redact_value(key: str, value: Any) -> Any:
    """Mask a value if its key names a secret; walk into mappings and lists."""
    if isinstance(value, Secret):
        return REDACTED
    if _SECRET_KEYS.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, item) for item in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no token, secret or Authorization header leaves the process."""
    for key, value in list(event_dict.items()):
        event_dict[key] = redact_value(key, value)
    return event_dict


def bound(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no line of a string value longer than `LINE_LIMIT` characters,
    except in debug events (where `amo_request_failed` carries a failed request's whole URL)."""
    if method == "debug":
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > LINE_LIMIT:
            event_dict[key] = bound_lines(value)
    return event_dict


_ANSI = re.compile(r"(\x1b\[[0-9;]*m)")


class BoundedConsole:
    """The console renderer, each rendered line cut to `LINE_LIMIT` visible characters (colour
    codes do not count) except in debug events."""

    def __init__(self, colors: bool) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=colors)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        text = str(self._render(logger, method, event_dict))
        if method == "debug":
            return text
        return "\n".join(_bound_visible(line) for line in text.split("\n"))


def _bound_visible(line: str) -> str:
    if len(line) <= LINE_LIMIT or len(_ANSI.sub("", line)) <= LINE_LIMIT:
        return line
    out: list[str] = []
    left = LINE_LIMIT - 1
    for part in _ANSI.split(line):
        if _ANSI.fullmatch(part):
            out.append(part)
        elif left > 0:
            out.append(part[:left])
            left -= len(part[:left])
    reset = "\x1b[0m" if "\x1b[" in line else ""
    return "".join(out) + "…" + reset


class _Stderr(io.TextIOBase):
    """`sys.stderr` as it is at each write. A progress display (rich's `Live`) redirects it while
    it draws, so log lines print above its bar instead of glued to it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Set up structlog (and stdlib logging for libraries) once, at the top of the program."""
    out: Any = stream or _Stderr()
    use_console = config.format == "console" or (config.format == "auto" and out.isatty())
    level = logging.getLevelNamesMapping()[config.level.upper()]
    renderer: Any = (
        BoundedConsole(colors=out.isatty()) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            bound,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (httpx, alembic, apscheduler) log through stdlib: keep them quiet but visible.
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, force=True)


# Whether a failure's error reaches a person as the last line of a one-shot command
# (`amosync: …` from `sync.cli.main`) rather than through the log: process-wide, because a run's
# helper threads log too; the daemon never sets it.
_LAST_LINE_SAYS_IT = [False]


@contextmanager
def failure_on_the_last_line(on: bool = True) -> Iterator[None]:
    """Within the block, `log_failure` leaves the error's text to the caller's last line."""
    before = _LAST_LINE_SAYS_IT[0]
    _LAST_LINE_SAYS_IT[0] = on
    try:
        yield
    finally:
        _LAST_LINE_SAYS_IT[0] = before


def log_failure(logger: Any, event: str, error: str | None, **fields: Any) -> None:
    """Log a failure that ends the work: an error record with `error`. In a one-shot command
    the same error is its last line on stderr, so the event (a run's summary with its counts)
    is logged at info without `error`: one error, said once, last."""
    if _LAST_LINE_SAYS_IT[0]:
        logger.info(event, **fields)
    else:
        logger.error(event, **fields, error=error)


def logging_configured() -> bool:
    """Whether `configure_logging` ran (before it, structlog would print to stdout)."""
    return bool(structlog.is_configured())


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` becomes the `logger` field."""
    return structlog.get_logger(name) if name else structlog.get_logger()
