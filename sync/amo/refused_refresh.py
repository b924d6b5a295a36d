"""A refresh token amoCRM's token endpoint refused (400/401: revoked, expired, another
integration's), remembered across processes so that no later command sends it again.

The refusal is kept in the stored token value (`REFUSED_KEY`, beside the pair, committed even
though the refresh failed): when it happened on the database's clock, the HTTP status and what
amoCRM said, and a **fingerprint** of the refused token, never the token: an HMAC-SHA256 keyed
with the integration's client secret over the token, the client id, the redirect URI and a
random salt of its own, so the stored value does not even show which of two tokens it was
without the secret. The next command that would send the same token with the same client
settings says one line instead (what, since when, what to do), and sends nothing; a token with
another fingerprint (a new one configured, a pair from `amosync auth --code`, or the same token
once the client id, secret or redirect URI is corrected: the endpoint's 400/401 for a
misconfigured client reads like a refused token) is tried as usual, and a successful refresh
stores a value without the record. Neither the fingerprint nor the token appears in a log
line, an error or a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard

from sync.amo.responses import REFRESH_REFUSED, REFRESH_REMEDY
from sync.config import OAuthConfig, Secret
from sync.errors import AMO_MESSAGE_LIMIT, AmoAuthError
from sync.lines import ELLIPSIS, bound_line
from sync.logs import redact_text

REFUSED_KEY = "refused_refresh_token"
REFUSED_FOR_GOOD = (400, 401)  # a 402 or 403 is lifted by a payment or an unblock: not kept
SAID_LIMIT = 300  # characters of amoCRM's refusal kept


def _fingerprint(token: Secret, client: OAuthConfig, salt: str) -> str:
    """The token as sent by this client: a refusal for a wrong client id or redirect URI (a 401
    or 400 like a revoked token's) no longer matches once the operator corrects it."""
    said = json.dumps([salt, client.client_id, client.redirect_uri, token.reveal()])
    message = f"amosync-refused-refresh-token:{said}".encode()
    key = client.client_secret.reveal().encode() or b"amosync"
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def remembered(
    value: Mapping[str, Any] | None,
    error: AmoAuthError,
    token: Secret,
    client: OAuthConfig,
    at: datetime,
) -> dict[str, Any]:
    """`value` (the stored token value, or None) with the refusal `error` of `token`, sent by
    `client` (the fingerprint's key and settings), recorded at `at` (the database's clock)."""
    salt = secrets.token_hex(16)
    record = {
        "fingerprint": _fingerprint(token, client, salt),
        "salt": salt,
        "refused_at": at.astimezone(UTC).isoformat(timespec="seconds"),
        "status": error.status,
        "said": bound_line(_said(error.reason), SAID_LIMIT),
    }
    return {**(value or {}), REFUSED_KEY: record}


def refusal_of(
    value: Mapping[str, Any] | None, token: Secret, client: OAuthConfig
) -> AmoAuthError | None:
    """The error to raise instead of sending `token` with `client`'s settings, when `value`
    records its refusal; None when it records none, or another token's (or other settings')."""
    record = value.get(REFUSED_KEY) if value else None
    if not isinstance(record, Mapping):
        return None
    salt, fingerprint = record.get("salt"), record.get("fingerprint")
    if not isinstance(salt, str) or not isinstance(fingerprint, str):
        return None
    if not hmac.compare_digest(_fingerprint(token, client, salt), fingerprint):
        return None
    status = record.get("status")
    head = f"amoCRM refused this refresh token at {record.get('refused_at')} (HTTP {status}: "
    tail = f"), and it is not sent again{REFRESH_REMEDY}"
    said = str(record.get("said") or "no reason given")
    line = head + _tail_of(said, AMO_MESSAGE_LIMIT - len(head) - len(tail)) + tail
    return AmoAuthError(line, status=status if isinstance(status, int) else None)


def _said(reason: str) -> str:
    """What amoCRM said, out of the refusal's line (`responses.token_refusal`), secrets masked."""
    return redact_text(reason.removeprefix(REFRESH_REFUSED).removesuffix(REFRESH_REMEDY))


def _tail_of(text: str, limit: int) -> str:
    """`text`, its end kept when it is too long (amoCRM puts the reason after its hint)."""
    return text if len(text) <= limit else ELLIPSIS + text[len(text) - limit + 1 :]


def holds_pair(value: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether a stored value holds a token pair (a refused seed is recorded without one)."""
    return value is not None and "access_token" in value
