"""Bearer tokens and the OAuth 2.0 token endpoint, with amoCRM's refresh rotation.

Access tokens are JWT-shaped (`exp`, `iat`, `jti`, `api_domain` claims; signed with a per-run
secret), so clients that read `exp` work. Rotation: a refresh token stays usable after it was
exchanged, until one of its successors is used; then it answers 401 "Token has been revoked",
and so do that successor's siblings (one chain per authorization, as amoCRM keeps).
Expiry reads the emulator clock, so tests expire tokens by advancing it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from sync.emulator.clock import EmulatorClock
from sync.emulator.settings import EmulatorSettings

OAUTH_PROBLEM = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


class OAuthProblem(Exception):
    def __init__(self, status: int, hint: str) -> None:
        super().__init__(hint)
        self.status = status
        self.body = {
            "hint": hint,
            "title": "Некорректный запрос",
            "type": OAUTH_PROBLEM,
            "status": status,
            "detail": "В запросе отсутствует ряд параметров или параметры невалидны",  # noqa: RUF001
        }


@dataclass
class _Refresh:
    token: str
    expires_at: float
    parent: str | None
    used: bool = False
    revoked: bool = False


@dataclass
class TokenBook:
    """Every token the emulator issued; thread-safe."""

    settings: EmulatorSettings
    clock: EmulatorClock
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _access: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    _uses: dict[str, int] = field(default_factory=dict)  # access token -> requests accepted
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _codes: dict[str, float] = field(default_factory=dict)  # code -> expires_at
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ttl = self.settings.long_lived_token_ttl_s
        self.long_lived_token = self.settings.long_lived_token or self._jwt(ttl, "long_lived")
        self._long_lived_expires_at = self.clock.now() + ttl

    def _jwt(self, ttl: float, kind: str) -> str:
        now = int(self.clock.now())
        claims = {"aud": self.settings.client_id, "jti": secrets.token_hex(16), "iat": now,
                  "nbf": now, "exp": int(now + ttl), "sub": "8000001", "kind": kind,
                  "api_domain": "api-emulator.amocrm.ru", "scopes": ["crm"]}  # fmt: skip
        head = _b64({"typ": "JWT", "alg": "HS256"})
        body = _b64(claims)
        signature = hmac.new(self._secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    # --- bearer check -----------------------------------------------------------------------

    def accepts(self, authorization: str | None, max_requests: int | None = None) -> bool:
        """Is the bearer token good? With `max_requests`, an OAuth access token dies (401 from
        then on) once it has been accepted that many times."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        now, mode = self.clock.now(), self.settings.auth_mode
        with self._lock:
            if token == self.long_lived_token:
                return mode != "oauth" and now < self._long_lived_expires_at
            expires_at = self._access.get(token)
            if mode == "long_lived" or expires_at is None or now >= expires_at:
                return False
            used = self._uses.get(token, 0) + 1
            if max_requests is not None and used > max_requests:
                self._access[token] = now  # dead for good, whatever the knob says later
                return False
            self._uses[token] = used
            return True

    # --- issuing ----------------------------------------------------------------------------

    def issue_code(self) -> str:
        code = "def50200" + secrets.token_hex(64)
        with self._lock:
            self._codes[code] = self.clock.now() + self.settings.auth_code_ttl_s
        return code

    def issue_pair(self, parent: str | None = None) -> dict[str, Any]:
        now = self.clock.now()
        access = self._jwt(self.settings.access_token_ttl_s, "oauth")
        refresh = "def50200" + secrets.token_hex(96)
        with self._lock:
            self._access[access] = now + self.settings.access_token_ttl_s
            self._refresh[refresh] = _Refresh(
                refresh, now + self.settings.refresh_token_ttl_s, parent
            )
        return {
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_ttl_s,
            "server_time": int(now),
            "access_token": access,
            "refresh_token": refresh,
        }

    def expire_access(self) -> None:
        """Every access token (and the long-lived one) expires now; refresh tokens stay good."""
        now = self.clock.now()
        with self._lock:
            self._access = dict.fromkeys(self._access, now)
            self._long_lived_expires_at = now

    def revoke_all(self) -> None:
        """As if an admin deactivated the integration: nothing issued so far works any more."""
        with self._lock:
            self._access.clear()
            self._codes.clear()
            for record in self._refresh.values():
                record.revoked = True
            self._long_lived_expires_at = self.clock.now()

    # --- the token endpoint -------------------------------------------------------------------

    def grant(self, form: dict[str, Any]) -> dict[str, Any]:
        """`POST /oauth2/access_token` body → token response, or OAuthProblem."""
        if self.settings.auth_mode == "long_lived":
            raise OAuthProblem(400, "OAuth is disabled: this account uses a long-lived token")
        self._check_client(form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            self._use_code(form.get("code"))
            return self.issue_pair()
        if grant_type == "refresh_token":
            token = str(form.get("refresh_token") or "")
            self._use_refresh(token)
            return self.issue_pair(parent=token)
        raise OAuthProblem(400, "Unsupported grant type")

    def _check_client(self, form: dict[str, Any]) -> None:
        settings = self.settings
        if form.get("client_id") != settings.client_id:
            raise OAuthProblem(401, "Client authentication failed")
        if not hmac.compare_digest(str(form.get("client_secret", "")), settings.client_secret):
            raise OAuthProblem(401, "Client authentication failed")
        if form.get("redirect_uri") not in (None, settings.redirect_uri):
            raise OAuthProblem(400, "Redirect URI does not match")

    def _use_code(self, code: Any) -> None:
        with self._lock:
            expires_at = self._codes.pop(str(code), None)
        if expires_at is None:
            raise OAuthProblem(400, "Authorization code has been revoked")
        if self.clock.now() >= expires_at:
            raise OAuthProblem(400, "Authorization code has expired")

    def _use_refresh(self, token: str) -> None:
        with self._lock:
            record = self._refresh.get(token)
            if record is None:
                raise OAuthProblem(400, "Cannot decrypt the refresh token")
            if record.revoked:
                raise OAuthProblem(401, "Token has been revoked")
            if self.clock.now() >= record.expires_at:
                raise OAuthProblem(401, "Token has expired")
            record.used = True
            self._settle_chain(record)

    def _settle_chain(self, record: _Refresh) -> None:
        """`record` is now the live link of its authorization's one chain: revoke its parent
        and every sibling issued from the same parent (a retried refresh forks the chain; the
        fork that gets used wins). Call with the lock held."""
        if record.parent is None:
            return
        parent = self._refresh.get(record.parent)
        if parent is not None:
            parent.revoked = True
        for other in self._refresh.values():
            if other.parent == record.parent and other is not record:
                other.revoked = True


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
