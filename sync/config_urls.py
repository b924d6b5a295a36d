"""Validators of the configuration's addresses: amoCRM's URL, the database URL, the webhook's
public URL and secret, the daemon's listening host. Each returns an error message, or None.

A URL is refused up front for what would otherwise fail only when the first request leaves (a
space in the host: "name not resolved", exit 1): a space or control character, named with its
place; a host that is neither a DNS name nor an IP address; a port out of range. A message never
echoes what may hold a password: it names the character or the part, not the value.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from sync.config_checks import named_character, shown

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
        if _is_dns_name(value):
            return None
        return f"must be an IPv4 address or a host name, got {shown(value)}"
    if address.version != 4:
        return f"must be an IPv4 address (the HTTP server listens on IPv4), got {shown(value)}"
    return None


def _is_dns_name(host: str) -> bool:
    """At most 253 characters of labels of letters, digits and hyphens (a final dot allowed)."""
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses, where plain http cannot leak a token."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def odd_character(value: str, *, inner_spaces: bool = False) -> str | None:
    """The first space or control character of a URL, named with its place ("a space at the
    end", "a newline at character 12"); None when there is none (with `inner_spaces`, a plain
    space not at either end is allowed). Names, never echoes: the URL may hold a password."""
    for index, char in enumerate(value):
        if inner_spaces and char == " " and 0 < index < len(value) - 1:
            continue
        if char.isspace() or not char.isprintable():
            return named_character(char, index, len(value))
    return None


def host_problem(host: str) -> str | None:
    """What makes a URL's host unusable: not an IP address, nor a DNS name of letters, digits
    and hyphens (a non-ASCII name is checked in its IDNA form, as it is sent)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    top = ascii_host.removesuffix(".").rsplit(".", 1)[-1]
    # 300.1.1.1 is no address, and no top-level domain is a number
    if ascii_host and _is_dns_name(ascii_host) and not top.isdigit():
        return None
    return f"has host {host!r}, which is neither a host name nor an IP address"


def url_port_problem(parts: SplitResult) -> str | None:
    try:
        parts.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        return "has a port that is not a number between 0 and 65535"
    return None


def amocrm_url(value: Any) -> str | None:
    if odd := odd_character(value):
        return f"must be the account's address without spaces or control characters, has {odd}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = "https://example.amocrm.ru"
        return f"must be an absolute http(s) URL such as {example}, got {shown(value)}"
    if "@" in parts.netloc:  # never echo it: the part before @ may be a password
        return (
            "must not carry credentials (user:password@): they would be sent as Basic auth "
            "instead of the token; set amocrm.access_token or [amocrm.oauth]"
        )
    return host_problem(parts.hostname) or url_port_problem(parts) or _account_only(parts)


def _account_only(parts: SplitResult) -> str | None:
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
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
    odd = odd_character(value)
    if odd or parts.scheme not in ("http", "https") or not parts.hostname:
        has = f"; has {odd}" if odd else ""
        return f"must be an absolute https:// URL such as https://sync.example.com{has}"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@); amoCRM posts to it as it is"
    if problem := host_problem(parts.hostname) or url_port_problem(parts):
        return problem
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
    if odd := odd_character(url, inner_spaces=True):  # never echo it: it may hold a password
        return f"must not contain spaces at either end or control characters, has {odd}"
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
