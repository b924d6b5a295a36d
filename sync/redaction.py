"""Secrets of connection URLs and libpq settings, hidden in any text. Pure; the ground floor
(the logs' `redact` and the database's `describe` use it, so a line on the terminal and a log
line hide the same things).

    hide_url_secrets("postgresql://u:Pw@rd@host/db?password=x")  →  "postgresql://***@host/db?password=***"

- everything between `://` and the last `@` of the URL (a user and password; a password with
  an unescaped `@` parses as part of the host, so the last `@` is where the host starts);
- the values of the settings that are secrets (`password`, `sslpassword`) in a query string
  or a libpq keyword string (`password=…`); paths such as `passfile` or `sslkey` are not.
"""

from __future__ import annotations

import re

HIDDEN = "***"
SECRET_SETTINGS = ("password", "sslpassword")

# a password may hold an unescaped `@` (up to the last one), but not a quote or comma: a URL
# inside JSON must not swallow the keys and values after it up to some e-mail's `@`
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:[^\s/@:]*:[^\s\"',]*|[^\s/@:]*)@")
# a value bare, or quoted as libpq's keyword strings allow (`password = 'se cret'`)
_SETTING = re.compile(
    r"(?i)((?:ssl)?password\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|(?:[^&\s\"\\]|\\.)+)"
)  # quoted (even unclosed: a cut line), or bare up to a space or `&` (backslash escapes)


def hide_url_secrets(text: str) -> str:
    """`text` with the user, password and secret settings of any URL in it hidden."""
    if "@" in text:
        text = _USERINFO.sub(r"\1" + HIDDEN + "@", text)
    if "=" in text:
        text = _SETTING.sub(r"\1" + HIDDEN, text)
    return text


def hide_config_value(value: str) -> str:
    """A configuration value as a message may quote it: `hide_url_secrets`, and everything before
    its last `@` too, as a value may be a URL without its scheme (`host:password@x`, a URL
    pasted without `https://`), which `hide_url_secrets` does not recognise as one."""
    text = hide_url_secrets(value)
    if "@" not in text:
        return text
    head, host = text.rsplit("@", 1)
    scheme = head.split("://", 1)[0] + "://" if "://" in head else ""
    return f"{scheme}{HIDDEN}@{host}"


def url_secrets(password: str | None, host: str | None, query: dict[str, object]) -> list[str]:
    """The secret strings of a parsed URL (its password, the secret settings' values, the part
    of a host before its last `@`: a password's rest), longest first, to hide them in a
    message that may quote them (the driver's "failed to resolve host 'rd@Secret@db'")."""
    found = [password or ""]
    if host and "@" in host:
        found.append(host.rsplit("@", 1)[0])
    for key, value in query.items():
        if key.lower() in SECRET_SETTINGS:
            found += [str(v) for v in value] if isinstance(value, tuple | list) else [str(value)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def hide(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` (and any URL secret) replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return hide_url_secrets(text)
