"""Validators of configuration values: each returns an error message, or None when fine.

Every pattern is matched with `fullmatch`: `re.match` with `$` also accepts a value followed by a
newline (`"amocrm\\n"`), which then breaks SQL, channel names or HTTP headers long after start.
A message never echoes a secret: the URL checks name what is wrong, not the value, and a value
that is echoed goes through `shown` (`sync.redaction`: a URL's user and password hidden, also in
a URL without its scheme, `host:password@x`).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sync.errors import ConfigProblem
from sync.redaction import hide_config_value

if TYPE_CHECKING:
    from sync.config import AmoCrmConfig, Config

Validator = Callable[[Any], str | None]

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
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return f"must not contain control characters (a newline, a tab), got {shown(value)}"
    return None


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


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses, where plain http cannot leak a token."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def amocrm_url(value: Any) -> str | None:
    if printable(value) or value != value.strip():
        return "must be the account's address without spaces or control characters (a newline)"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = "https://example.amocrm.ru"
        return f"must be an absolute http(s) URL such as {example}, got {shown(value)}"
    if "@" in parts.netloc:  # never echo it: the part before @ may be a password
        return (
            "must not carry credentials (user:password@): they would be sent as Basic auth "
            "instead of the token; set amocrm.access_token or [amocrm.oauth]"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "plain http:// is refused for non-loopback hosts (the token would travel in clear)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be the account's address only, without a path, query or fragment"
    return None


# The hook path is /webhooks/amocrm/<secret>: the secret is its only protection (amoCRM does not
# sign hooks), so it is made of characters a URL path carries unchanged (RFC 3986 unreserved).
# Both keys are checked only with webhooks.enabled (`WebhooksConfig`: `when="enabled"`); a short
# secret or a plain-http public_url is allowed (a test stand-in, an internal network) but warned
# about where it matters: when the daemon starts and when `webhooks register` runs
# (`hook_warnings`).
HOOK_SECRET_MIN, HOOK_SECRET_MAX = 16, 128
_HOOK_SECRET = re.compile(r"[A-Za-z0-9._~-]+")


def hook_secret(value: Any) -> str | None:
    """`webhooks.secret`: at most 128 URL-safe characters (empty is `webhook_problems`' "not
    set"); never shown."""
    text = value.reveal() if hasattr(value, "reveal") else str(value)
    if not text:
        return None
    if not _HOOK_SECRET.fullmatch(text):
        return (
            "must use only letters, digits and - . _ ~ (it is a URL path segment); value not "
            "shown. Generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if len(text) > HOOK_SECRET_MAX:
        return f"must be at most {HOOK_SECRET_MAX} characters, got {len(text)}; value not shown"
    return None


def public_url(value: Any) -> str | None:
    """`webhooks.public_url`: empty, or the absolute http(s) address amoCRM reaches the daemon
    at, without credentials, spaces, a query or a fragment."""
    if not value:
        return None
    parts = urlsplit(value)
    clean = not printable(value) and value == value.strip() and " " not in value
    if not (clean and parts.scheme in ("http", "https") and parts.hostname):
        return "must be an absolute https:// URL such as https://sync.example.com, without spaces"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@); amoCRM posts to it as it is"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (the hook path is appended to it)"
    return None


def hook_warnings(secret: str, url: str) -> list[str]:
    """What is allowed but weak about the hook's secret and public_url (never shows either)."""
    warnings = []
    if secret and len(secret) < HOOK_SECRET_MIN:
        warnings.append(
            f"webhooks.secret is shorter than {HOOK_SECRET_MIN} characters: the hook path "
            "/webhooks/amocrm/<secret> is its only protection and may be guessed"
        )
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        warnings.append(
            "webhooks.public_url is plain http:// on a non-loopback host: amoCRM posts the hook "
            "path, which holds webhooks.secret, in clear"
        )
    return warnings


# psycopg 3 runs them all: psycopg2 URLs take the same libpq parameters (sync.db.engine)
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


def database_url(value: Any) -> str | None:
    url = value.reveal()
    if not url:
        return None
    if printable(url) or url != url.strip():  # never echo it: it may hold a password
        return "must not contain spaces at either end or control characters (a newline)"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in POSTGRESQL_SCHEMES:
        return "must be empty (embedded PostgreSQL) or a postgresql:// URL"
    return _url_parts_problem(url)


def _url_parts_problem(url: str) -> str | None:
    """What SQLAlchemy cannot parse of a postgresql:// URL (a port that is no number, say),
    found here rather than as a crash of the first command that connects."""
    from sqlalchemy.engine import make_url  # imported here: only needed to validate

    try:
        port = make_url(url).port
    except ValueError:  # int() of the port
        return "has a port that is not a number (postgresql://user:password@host:port/database)"
    except Exception:  # noqa: BLE001 - ArgumentError; sqlalchemy.exc is not the config's layer
        return "is not a valid database URL (postgresql://user:password@host:port/database)"
    if port is not None and not 1 <= port <= 65535:
        return f"has port {port}: must be between 1 and 65535"
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


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def listen_host(value: Any) -> str | None:
    """`daemon.http_host`: an IPv4 address or a host name, checked at start rather than when
    the daemon binds. Empty is refused: Python's server would listen on every interface, a
    choice that must be said (`0.0.0.0`). The server is IPv4 (`sync.daemon.server`), so an
    IPv6 address cannot be bound either."""
    if not value:
        return 'must not be empty: use "127.0.0.1" (this host only) or "0.0.0.0" (every interface)'
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        labels = value.removesuffix(".").split(".")
        if len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels):
            return None
        return f"must be an IPv4 address or a host name, got {shown(value)}"
    if address.version != 4:
        return f"must be an IPv4 address (the HTTP server listens on IPv4), got {shown(value)}"
    return None


# --- cross-key rules (each key alone is checked by the validators above) ---------------------


def auth_problems(amo: AmoCrmConfig) -> list[ConfigProblem]:
    """Cross-key rules for authentication (the keys themselves are checked one by one)."""
    problems: list[ConfigProblem] = []
    oauth = amo.oauth
    if amo.access_token and oauth.enabled:
        problems.append(
            ConfigProblem(
                "amocrm.access_token",
                "file/environment",
                "set either a long-lived access_token or [amocrm.oauth], not both",
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


def rate_problems(amo: AmoCrmConfig) -> list[ConfigProblem]:
    if amo.max_rps > 7 and not amo.is_loopback:
        return [
            ConfigProblem(
                "amocrm.max_rps",
                "file/environment",
                f"{amo.max_rps:g} exceeds amoCRM's limit of 7 requests/s (an IP ban follows); "
                "values above 7 are allowed only against a loopback emulator",
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
        why = "must not be 0 when webhooks.enabled is true: the hook is served on that port"
        problems.append(ConfigProblem("daemon.http_port", "file/environment", why))
    return problems
