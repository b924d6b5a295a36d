"""Access tokens: a long-lived token, or OAuth 2.0 with refresh-token rotation.

OAuth rules (amocrm-api.md §9), and how they are kept here:
- every refresh returns a new pair; the **new pair is committed to the database before the new
  access token is used** (`TokenStorage.locked()` commits when its block ends, and only then is
  the pair handed out). If the commit fails the pair is lost, but amoCRM keeps the old refresh
  token valid until its successor is used, so the next attempt still works;
- refresh is **single-flight**: a thread lock inside the process, and the storage's lock (a
  PostgreSQL advisory lock) across processes; whoever waits re-reads the stored pair and uses it
  if somebody else refreshed meanwhile;
- refresh **ahead of expiry** (at `REFRESH_AT` of the lifetime), and once after a 401; a
  token a 401 refused is never handed out again: `after_unauthorized` returns the pair another
  thread already renewed, or waits for the refresh in progress (the session's `TokenGate` makes
  every thread holding the dead token call it);
- a refresh token the token endpoint **refused** (its 400/401: revoked, deactivated integration)
  is never sent again, by this process or any later one: every later attempt with it, from any
  thread, raises the same refusal at once, and the stored value records it (a keyed
  fingerprint, never the token: `sync.amo.refused_refresh`) so the next command says when it
  was refused without sending it. A pair stored meanwhile by another process (`amosync auth
  --code`, a newly configured token) carries another refresh token and is used as usual;
- the **stored pair wins** over the configured refresh token, which is only a seed, unless
  that token is one the store has never seen. The stored value remembers, as hashes (`SEED_KEY`,
  never the tokens), every configured refresh token that seeded a pair or was configured when
  one was stored or refreshed. A configured token not among them is one the operator supplied
  anew (say after amoCRM revoked the integration): it is exchanged under the same lock, committed
  before use like any refresh, and its pair replaces the stored one. A process still configured
  with an earlier token (a daemon not restarted yet) keeps using the stored pair.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sync.amo.refused_refresh import REFUSED_FOR_GOOD, holds_pair, refusal_of, remembered
from sync.clock import Clock, SystemClock, to_unix
from sync.config import AmoCrmConfig, OAuthConfig, Secret
from sync.errors import AmoAuthError
from sync.logs import get_logger

REFRESH_AT = 0.8  # refresh once this share of the access token's lifetime has passed
TOKEN_PATH = "/oauth2/access_token"  # noqa: S105 (a URL path, not a secret)

SEED_KEY = "configured_sha256"  # the stored value's hashes of the configured tokens it has seen
SEEDS_KEPT = 16

log = get_logger("sync.amo.auth")

# POSTs a JSON body to the token endpoint and returns the decoded answer (see AmoSession).
TokenExchange = Callable[[Mapping[str, str]], Mapping[str, Any]]


class TokenProvider(Protocol):
    """What the HTTP layer needs: a token to send, and a way to get a better one after a 401."""

    def access_token(self) -> str: ...

    def after_unauthorized(self, used: str) -> bool:
        """The token `used` got a 401; return True when a different token is now available."""
        ...


class StaticToken:
    """A long-lived token: nothing to refresh; a 401 means it expired or was revoked."""

    def __init__(self, token: Secret) -> None:
        if not token:
            raise AmoAuthError("no amoCRM access token configured")
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(***)"

    def access_token(self) -> str:
        return self._token.reveal()

    def after_unauthorized(self, used: str) -> bool:
        return False


@dataclass(frozen=True)
class TokenPair:
    access_token: Secret
    refresh_token: Secret
    obtained_at: int  # unix seconds, our clock
    expires_at: int  # unix seconds, our clock

    def due(self, now: datetime) -> bool:
        lifetime = max(0, self.expires_at - self.obtained_at)
        return to_unix(now) >= self.obtained_at + REFRESH_AT * lifetime

    def to_value(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal(),
            "obtained_at": self.obtained_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> TokenPair:
        return cls(
            access_token=Secret(str(value["access_token"])),
            refresh_token=Secret(str(value["refresh_token"])),
            obtained_at=int(value["obtained_at"]),
            expires_at=int(value["expires_at"]),
        )

    @classmethod
    def from_grant(cls, answer: Mapping[str, Any], now: datetime) -> TokenPair:
        """The token endpoint's answer → a pair; expiry counted on our clock, not the server's."""
        try:
            access, refresh = str(answer["access_token"]), str(answer["refresh_token"])
            expires_in = int(answer.get("expires_in", 86400))
        except (KeyError, TypeError, ValueError) as exc:
            raise AmoAuthError("amoCRM's token endpoint returned no token pair") from exc
        obtained = to_unix(now)
        return cls(Secret(access), Secret(refresh), obtained, obtained + expires_in)


class LockedValue(Protocol):
    """The stored token value, read under the storage lock; `save` is committed at block end,
    `keep` even when the block ends with an error."""

    value: Mapping[str, Any] | None

    def save(self, value: Mapping[str, Any]) -> None: ...

    def keep(self, value: Mapping[str, Any]) -> None: ...

    def now(self) -> datetime:
        """The storage's clock (the database's)."""
        ...


class TokenStorage(Protocol):
    """Where the pair lives (`sync.db.tokens.TokenStore`: a `sync_state` row)."""

    def load(self) -> Mapping[str, Any] | None: ...

    def locked(self) -> AbstractContextManager[LockedValue]: ...


def grant_body(oauth: OAuthConfig, grant: str, secret: str) -> dict[str, str]:
    field = "code" if grant == "authorization_code" else "refresh_token"
    return {
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret.reveal(),
        "grant_type": grant,
        field: secret,
        "redirect_uri": oauth.redirect_uri,
    }


def seed_digest(token: Secret) -> str | None:
    """What the stored value remembers of a configured refresh token: a hash, None for none."""
    if not token:
        return None
    return hashlib.sha256(f"amosync-refresh-seed:{token.reveal()}".encode()).hexdigest()


def superseded(oauth: OAuthConfig, value: Mapping[str, Any]) -> bool:
    """True when the configured refresh token is one the stored value has never seen: the
    operator supplied it anew, and it wins. A pair stored before tokens were remembered (no
    `SEED_KEY`) is kept: its configured token is taken to be its seed."""
    seen = value.get(SEED_KEY)
    if not oauth.refresh_token or not isinstance(seen, list):
        return False
    return seed_digest(oauth.refresh_token) not in seen


def stored_value(
    pair: TokenPair, oauth: OAuthConfig, before: Mapping[str, Any] | None, *, new: bool = False
) -> dict[str, Any]:
    """The value to store: the pair, and the configured tokens seen so far with today's. A pair
    stored before tokens were remembered, refreshed with none configured, stays as it was (its
    seed is unknown) unless the pair is `new` (`auth --code`)."""
    seen = before.get(SEED_KEY) if before else None
    digest = seed_digest(oauth.refresh_token)
    if before is not None and not isinstance(seen, list) and digest is None and not new:
        return pair.to_value()
    hashes = [h for h in seen if isinstance(h, str)] if isinstance(seen, list) else []
    if digest is not None and digest not in hashes:
        hashes.append(digest)
    return {**pair.to_value(), SEED_KEY: hashes[-SEEDS_KEPT:]}


def store_authorization_code(
    oauth: OAuthConfig,
    storage: TokenStorage,
    exchange: TokenExchange,
    code: str,
    clock: Clock | None = None,
) -> TokenPair:
    """`amosync auth --code`: trade an authorization code for a pair and store it."""
    clock = clock or SystemClock()
    with storage.locked() as row:
        answer = exchange(grant_body(oauth, "authorization_code", code))
        pair = TokenPair.from_grant(answer, clock.now())
        # the refresh token configured now is accounted for: it never replaces this pair
        row.save(stored_value(pair, oauth, row.value, new=True))
    log.info("amo_tokens_stored", grant="authorization_code", expires_at=pair.expires_at)
    return pair


class OAuthTokens:
    """OAuth access tokens with rotation, stored in the database; safe to share across threads."""

    def __init__(
        self,
        oauth: OAuthConfig,
        storage: TokenStorage,
        exchange: TokenExchange,
        clock: Clock | None = None,
    ) -> None:
        self._oauth = oauth
        self._storage = storage
        self._exchange = exchange
        self._clock = clock or SystemClock()
        self._pair: TokenPair | None = None
        self._lock = threading.Lock()
        # refresh tokens the token endpoint refused (their digest) → that refusal, raised again
        self._refused: dict[str, AmoAuthError] = {}

    def __repr__(self) -> str:
        return f"OAuthTokens(client_id={self._oauth.client_id!r})"

    def access_token(self) -> str:
        pair = self._pair
        if pair is None or pair.due(self._clock.now()):
            pair = self._renew(rejected=None)
        return pair.access_token.reveal()

    def after_unauthorized(self, used: str) -> bool:
        pair = self._renew(rejected=used)
        return pair.access_token.reveal() != used

    def _renew(self, rejected: str | None) -> TokenPair:
        with self._lock:
            current = self._pair
            if current is not None and self._usable(current, rejected):
                return current  # another thread renewed (or a 401 named an older token)
            if current is None and rejected is None:
                loaded = self._storage.load()
                fresh = holds_pair(loaded) and not superseded(self._oauth, loaded)
                current = TokenPair.from_value(loaded) if loaded and fresh else None
                if current is not None and self._usable(current, rejected):
                    self._pair = current
                    return current
            self._pair = self._refresh_stored(rejected)
            return self._pair

    def _exchange_once(self, refresh: Secret, row: LockedValue) -> Mapping[str, Any]:
        """The refresh grant, unless amoCRM already refused this refresh token (in this process,
        or in an earlier one: `sync.amo.refused_refresh`): then that refusal again, nothing
        sent (a revoked token was POSTed once per thread and retry, then once per command)."""
        digest = seed_digest(refresh) or ""
        refused = self._refused.get(digest) or refusal_of(row.value, refresh, self._oauth)
        if refused is not None:
            self._refused[digest] = refused
            raise AmoAuthError(refused.reason, method=refused.method, url=refused.url,
                               status=refused.status)  # fmt: skip
        try:
            return self._exchange(grant_body(self._oauth, "refresh_token", refresh.reveal()))
        except AmoAuthError as exc:
            if exc.status in REFUSED_FOR_GOOD:  # revoked, expired, another integration's
                self._refused[digest] = exc  # (a 402 or 403 passes: paid or unblocked later)
                row.keep(remembered(row.value, exc, refresh, self._oauth, row.now()))
            raise

    def _usable(self, pair: TokenPair, rejected: str | None) -> bool:
        if rejected is not None and pair.access_token.reveal() == rejected:
            return False
        return not pair.due(self._clock.now())

    def _refresh_stored(self, rejected: str | None) -> TokenPair:
        with self._storage.locked() as row:
            value = row.value
            replaced = value is not None and superseded(self._oauth, value)
            stored = TokenPair.from_value(value) if holds_pair(value) and not replaced else None
            if stored is not None and self._usable(stored, rejected):
                log.debug("amo_tokens_reused", reason="refreshed_elsewhere")
                return stored  # another process refreshed while we waited for the lock
            refresh = stored.refresh_token if stored else self._oauth.refresh_token
            if not refresh:
                raise AmoAuthError(
                    "no OAuth refresh token stored or configured: run `amosync auth --code CODE`"
                )
            answer = self._exchange_once(refresh, row)
            pair = TokenPair.from_grant(answer, self._clock.now())
            row.save(stored_value(pair, self._oauth, value))
        # The block above has committed: only now may the new access token be used.
        if replaced:  # said once it happened: a token amoCRM refused replaced nothing
            log.info("amo_refresh_token_replaced", reason="configured_token_changed")
        log.info("amo_tokens_refreshed", expires_at=pair.expires_at, seeded=stored is None)
        return pair


def tokens_for(
    config: AmoCrmConfig, storage: TokenStorage | None, exchange: TokenExchange, clock: Clock | None
) -> TokenProvider:
    """The configured way to authenticate: a long-lived token, or stored OAuth tokens."""
    if config.access_token:
        return StaticToken(config.access_token)
    if not config.oauth.enabled:
        raise AmoAuthError("no amoCRM credentials: set amocrm.access_token or [amocrm.oauth]")
    if storage is None:
        raise AmoAuthError("OAuth needs the database to keep rotated tokens (no storage given)")
    return OAuthTokens(config.oauth, storage, exchange, clock)
