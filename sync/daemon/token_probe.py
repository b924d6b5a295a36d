"""A daemon tries a refused long-lived access token again, now and then, before a job.

A 401 on the long-lived token (`amocrm.access_token`) makes the session's `TokenGate` stop every
request carrying it: the requests of that burst never go out with a token known dead. But a
long-lived token has no refresh, and amoCRM's refusal may be its own passing mistake: a daemon
that never sent it again would stay failing (`amocrm_auth_failed`, `pull_stale`) while amoCRM
accepts the same token from a CLI. So before each scheduled amoCRM job the daemon lets the gate
release the token once its back-off has passed (`TokenGate.probe`: 10 s, doubled by every probe
refused, at most 5 minutes), with a warning; the job's first request is the probe, a 401 stops
the rest of the job, and a success clears the health reason. OAuth tokens are not probed: a 401
refreshes them, and a refused one is never wanted again.
"""

from __future__ import annotations

from collections.abc import Callable

from sync.amo.auth import StaticToken
from sync.amo.session import AmoSession
from sync.logs import get_logger

log = get_logger("sync.daemon")


def probe_refused_token(session: AmoSession) -> bool:
    """Release the long-lived token for one more try if amoCRM refused it and its back-off has
    passed; True when released (logged as `amo_token_retry`)."""
    tokens = session.tokens
    if not isinstance(tokens, StaticToken):
        return False
    ago = session.gate.probe(tokens.access_token())
    if ago is None:
        return False
    log.warning("amo_token_retry", refused_s_ago=round(ago),
                note="amoCRM refused the access token; trying it once more")  # fmt: skip
    return True


def probing(session: AmoSession, job: Callable[[], object]) -> Callable[[], object]:
    """`job`, preceded by a probe of a refused long-lived token."""

    def run() -> object:
        probe_refused_token(session)
        return job()

    return run
