"""Validators of configuration values: each returns an error message, or None when fine.

Every pattern is matched with `fullmatch`: `re.match` with `$` also accepts a value followed by a
newline (`"amocrm\\n"`), which then breaks SQL, channel names or HTTP headers long after start.
A message never echoes a secret: the URL checks name what is wrong, not the value, and a value
that is echoed goes through `shown` (`sync.redaction`: a URL's user and password hidden, also in
a URL without its scheme, `host:password@x`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sync.errors import ConfigProblem
from sync.redaction import hide_config_value

if TYPE_CHECKING:
    from sync.config import AmoCrmConfig, Config

Validator = Callable[[Any], str | None]
# a dotted key -> where its value came from ("file amosync.toml", "environment AMOSYNC_…",
# "default"): `Config.source_of`, so a rule about two keys names each one's real source
Where = Callable[[str], str]

# NOTIFY channel names are identifiers (at most 63 bytes); sync_requests announces itself on
# `amosync_<schema>_requests` (sync.db.capture.notify_channel), so the schema gets 63 - 17.
MAX_SCHEMA_LENGTH = 63 - len("amosync_") - len("_requests")


def shown(value: Any) -> str:
    """A value as a message quotes it: its repr, with any URL's user and password hidden."""
    return repr(hide_config_value(value)) if isinstance(value, str) else repr(value)


def between(low: float, high: float) -> Validator:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}, got {value}"

    return check


def positive(value: Any) -> str | None:
    """Above 0 and finite: `inf` would pass `> 0` and overflow later (APScheduler's interval, a
    socket timeout) with a traceback instead of this message."""
    if value > 0 and math.isfinite(value):
        return None
    return f"must be a finite number greater than 0, got {value}"


def one_of(*choices: str) -> Validator:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}; got {shown(value)}"

    return check


def subset_of(*choices: str) -> Validator:
    def check(value: Any) -> str | None:
        unknown = [v for v in value if v not in choices]
        if not unknown:
            return None
        return f"unknown value(s) {', '.join(map(shown, unknown))}; allowed: {', '.join(choices)}"

    return check


def printable(value: Any) -> str | None:
    """No control characters (a newline, a tab) in a plain string key."""
    for index, char in enumerate(value):
        if ord(char) < 32 or ord(char) == 127:
            has = named_character(char, index, len(value))
            return f"must not contain control characters, has {has}: {shown(value)}"
    return None


_CHARACTER_NAMES = {" ": "a space", "\n": "a newline", "\r": "a carriage return", "\t": "a tab"}


def named_character(char: str, index: int, length: int) -> str:
    """A character a person cannot see, by name and place: "a newline at the end"."""
    name = _CHARACTER_NAMES.get(char, f"the character U+{ord(char):04X}")
    if index == length - 1:
        return f"{name} at the end"
    return f"{name} at the start" if index == 0 else f"{name} at character {index + 1}"


def secret_text(value: Any) -> str | None:
    """A token or secret without control characters or spaces at either end (a newline left by
    `echo` into an env file would break the Authorization header); never shows the value."""
    text = value.reveal() if hasattr(value, "reveal") else str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        return "must not contain control characters (a trailing newline?); value not shown"
    if text != text.strip():
        return "must not start or end with spaces; value not shown"
    return None


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def schema_name(value: Any) -> str | None:
    if not _IDENTIFIER.fullmatch(value):
        return f"must be a lower-case SQL identifier (letters, digits, _), got {shown(value)}"
    if len(value) > MAX_SCHEMA_LENGTH:
        return (
            f"must be at most {MAX_SCHEMA_LENGTH} characters (the sync_requests NOTIFY channel "
            f"amosync_<schema>_requests is limited to 63), got {len(value)}"
        )
    return reserved_schema(value)


def reserved_schema(value: str) -> str | None:
    """A system schema: PostgreSQL refuses to create `pg_*` ones (a late error of its own), and
    information_schema accepts our tables, but pg_dump leaves that schema out: backups would
    silently miss the data."""
    if value.startswith("pg_"):
        return f"must not start with pg_ (PostgreSQL reserves pg_ schema names), got {shown(value)}"
    if value == "information_schema":
        return (
            "must not be information_schema (the SQL standard's catalog schema: pg_dump skips "
            "it, so backups would miss the data)"
        )
    return None


def cron(value: Any) -> str | None:
    if not value:
        return None
    if printable(value) or len(value.split()) != 5:
        return f"must be a 5-field crontab expression (or empty to disable), got {shown(value)}"
    from apscheduler.triggers.cron import CronTrigger  # imported here: only needed to validate

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        return f"is not a valid crontab expression: {hide_config_value(str(exc))}"
    return None


POLICIES = ("newest_wins", "remote_wins", "local_wins", "manual")
_POLICY_FIELDS = re.compile(
    r"name|first_name|last_name|responsible_user_id|custom_fields_values|cf:([0-9]+|[A-Za-z_0-9]+)"
)


def field_policies(value: Any) -> str | None:
    """Per-field conflict policies: ["name=local_wins", "cf:123=manual", ...]; a field code in
    any case, as codes are case-insensitive. Every bad entry is named, not just the first."""
    bad = []
    for item in value:
        field_name, _, policy = item.partition("=")
        if not _POLICY_FIELDS.fullmatch(field_name) or policy not in POLICIES:
            bad.append(shown(item))
    if not bad:
        return None
    return (
        f"entries must look like FIELD=POLICY (FIELD: name, first_name, last_name, "
        f"responsible_user_id, custom_fields_values, cf:<field id or CODE>; POLICY: "
        f"{', '.join(POLICIES)}), got {', '.join(bad)}"
    )


# --- cross-key rules (each key alone is checked by the validators above) ---------------------


def sourced(keys: list[str], where: Where) -> str:
    """Keys with where each came from, grouped: `a, b (file x.toml); c (environment C)`."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(where(key), []).append(key)
    return "; ".join(f"{', '.join(names)} ({source})" for source, names in groups.items())


def auth_problems(amo: AmoCrmConfig, where: Where) -> list[ConfigProblem]:
    """Cross-key rules for authentication (the keys themselves are checked one by one)."""
    problems: list[ConfigProblem] = []
    oauth = amo.oauth
    if amo.access_token and oauth.enabled:
        names = ("client_id", "client_secret", "refresh_token")  # what turns OAuth on
        also = [f"amocrm.oauth.{name}" for name in names if getattr(oauth, name)]
        problems.append(
            ConfigProblem(
                "amocrm.access_token",
                where("amocrm.access_token"),
                "set either a long-lived access_token or [amocrm.oauth], not both; also set: "
                + sourced(also, where),
            )
        )
    if oauth.enabled:
        for name in ("client_id", "client_secret", "redirect_uri"):
            if not getattr(oauth, name):
                problems.append(
                    ConfigProblem(
                        f"amocrm.oauth.{name}", "not set", "required when OAuth is configured"
                    )
                )
    return problems


def auth_required(amo: AmoCrmConfig) -> list[ConfigProblem]:
    """A command that talks to amoCRM needs some way to authenticate."""
    if amo.access_token or amo.oauth.enabled:
        return []
    why = "set a long-lived token or the [amocrm.oauth] keys"
    return [ConfigProblem("amocrm.access_token", "not set", why)]


def rate_problems(amo: AmoCrmConfig, where: Where) -> list[ConfigProblem]:
    if amo.max_rps > 7 and not amo.is_loopback:
        return [
            ConfigProblem(
                "amocrm.max_rps",
                where("amocrm.max_rps"),
                f"{amo.max_rps:g} exceeds amoCRM's limit of 7 requests/s (an IP ban follows); "
                "values above 7 are allowed only against a loopback emulator, and "
                f"amocrm.base_url ({where('amocrm.base_url')}) is not one",
            )
        ]
    return []


def webhook_problems(config: Config) -> list[ConfigProblem]:
    """With webhooks on, the hook needs its secret path and the daemon's HTTP port."""
    hooks = config.webhooks
    if not hooks.enabled:
        return []
    problems = []
    if not hooks.secret:
        why = (
            "required when webhooks.enabled is true (the hook's path is /webhooks/amocrm/<secret>)"
        )
        problems.append(ConfigProblem("webhooks.secret", "not set", why))
    if not config.daemon.http_port:
        why = (
            f"must not be 0 when webhooks.enabled is true ({config.source_of('webhooks.enabled')}):"
            " the hook is served on that port"
        )
        where = config.source_of("daemon.http_port")
        problems.append(ConfigProblem("daemon.http_port", where, why))
    return problems
