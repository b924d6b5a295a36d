"""The error of a request stopped before it left because its access token was refused: it
names the request amoCRM answered 401, not itself (amoCRM never received it)."""

from __future__ import annotations

from sync.amo.gate import TokenGate
from sync.errors import AmoAuthError
from sync.logs import redact_text

NOT_SENT_AGAIN = "amoCRM refused the access token (401); it is not sent again for now"


def refusal(gate: TokenGate, token: str | None, method: str, url: str, reason: str) -> AmoAuthError:
    """`reason` as an `AmoAuthError` naming the request whose 401 refused `token` (the one
    given, `method` `url`, when the gate does not know it: a token refused in an earlier
    process's lifetime of the gate, or by the token endpoint)."""
    refused = gate.refused_by(token)
    if refused is not None:
        method, url = refused
    return AmoAuthError(reason, method=method, url=redact_text(url), status=401)
