"""Contract: Bearer auth, the long-lived token, OAuth grants and refresh-token rotation."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest
from emulator_helpers import SSL

from sync.emulator import Emulator, EmulatorTransport

CONTACTS = "/api/v4/contacts"


def grant(http: httpx.Client, emulator: Emulator, **fields: str) -> httpx.Response:
    s = emulator.settings
    body = {
        "client_id": s.client_id,
        "client_secret": s.client_secret,
        "redirect_uri": s.redirect_uri,
        **fields,
    }
    return http.post("/oauth2/access_token", json=body)


def code_pair(http: httpx.Client, emulator: Emulator) -> dict:
    code = http.post("/_emulator/oauth/code").json()["code"]
    response = grant(http, emulator, grant_type="authorization_code", code=code)
    assert response.status_code == 200, response.text
    return response.json()


def refresher(http: httpx.Client, emulator: Emulator) -> Callable[[str], httpx.Response]:
    return lambda token: grant(http, emulator, grant_type="refresh_token", refresh_token=token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_or_wrong_token_is_a_401_problem(anonymous: httpx.Client) -> None:
    for headers in ({}, bearer("nope"), {"Authorization": "Basic abc"}):
        response = anonymous.get(CONTACTS, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Unauthorized"
        assert response.headers["x-request-id"]


def test_long_lived_token_is_a_jwt_that_works(client: httpx.Client, emulator) -> None:
    payload = emulator.long_lived_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] > claims["iat"]
    assert client.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_authorization_code_grant(anonymous: httpx.Client, emulator) -> None:
    pair = code_pair(anonymous, emulator)
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 86_400
    assert pair["server_time"] == int(emulator.clock.now())
    assert anonymous.get(CONTACTS, headers=bearer(pair["access_token"])).status_code == 200


def test_code_is_single_use_and_expires_after_20_minutes(anonymous: httpx.Client, emulator) -> None:
    code = anonymous.post("/_emulator/oauth/code").json()["code"]
    assert grant(anonymous, emulator, grant_type="authorization_code", code=code).status_code == 200
    reused = grant(anonymous, emulator, grant_type="authorization_code", code=code)
    assert reused.status_code == 400
    late = anonymous.post("/_emulator/oauth/code").json()["code"]
    emulator.clock.advance(20 * 60 + 1)
    expired = grant(anonymous, emulator, grant_type="authorization_code", code=late)
    assert expired.status_code == 400
    assert expired.json()["hint"] == "Authorization code has expired"


def test_refresh_rotation_old_token_works_until_its_successor_is_used(anonymous, emulator) -> None:
    first = code_pair(anonymous, emulator)["refresh_token"]
    second = grant(anonymous, emulator, grant_type="refresh_token", refresh_token=first).json()
    # the successor has not been used yet, so the old refresh token still works (network retry)
    retry = grant(anonymous, emulator, grant_type="refresh_token", refresh_token=first)
    assert retry.status_code == 200
    third = grant(
        anonymous, emulator, grant_type="refresh_token", refresh_token=second["refresh_token"]
    )
    assert third.status_code == 200
    revoked = grant(anonymous, emulator, grant_type="refresh_token", refresh_token=first)
    assert revoked.status_code == 401
    assert revoked.headers["content-type"] == "application/problem+json"
    assert revoked.json()["hint"] == "Token has been revoked"
    assert revoked.json()["type"] == "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


def test_using_one_fork_of_a_retried_refresh_revokes_the_other(anonymous, emulator) -> None:
    """Refreshing R0 twice forks it into R1 and R1b; amoCRM keeps one chain per authorization,
    so once R1 is used, R1b is as dead as R0."""
    first = code_pair(anonymous, emulator)["refresh_token"]
    refresh = refresher(anonymous, emulator)
    fork_a, fork_b = refresh(first).json(), refresh(first).json()
    assert refresh(fork_a["refresh_token"]).status_code == 200
    for stale in (fork_b["refresh_token"], first):
        revoked = refresh(stale)
        assert revoked.status_code == 401, revoked.text
        assert revoked.json()["hint"] == "Token has been revoked"


def test_the_other_fork_may_win_instead(anonymous, emulator) -> None:
    first = code_pair(anonymous, emulator)["refresh_token"]
    refresh = refresher(anonymous, emulator)
    forks = [refresh(first).json()["refresh_token"] for _ in range(3)]
    winner = refresh(forks[2])
    assert winner.status_code == 200
    assert [refresh(token).status_code for token in (*forks[:2], first)] == [401, 401, 401]
    # the winner's own chain goes on as before: it still works until its successor is used
    assert refresh(forks[2]).status_code == 200
    assert refresh(winner.json()["refresh_token"]).status_code == 200
    assert refresh(forks[2]).status_code == 401


def test_token_endpoint_takes_a_form_body_and_checks_the_client(anonymous, emulator) -> None:
    code = anonymous.post("/_emulator/oauth/code").json()["code"]
    s = emulator.settings
    form = {
        "client_id": s.client_id,
        "client_secret": "wrong",
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": s.redirect_uri,
    }
    assert anonymous.post("/oauth2/access_token", data=form).status_code == 401
    form["client_secret"] = s.client_secret
    assert anonymous.post("/oauth2/access_token", data=form).status_code == 200


def test_access_token_lifetime_is_configurable(make_settings) -> None:
    emulator = Emulator(make_settings(access_token_ttl_s=60))
    with httpx.Client(
        verify=SSL, transport=EmulatorTransport(emulator), base_url="http://e.test"
    ) as http:
        check_lifetime(http, emulator)


def check_lifetime(anonymous: httpx.Client, emulator: Emulator) -> None:
    pair = code_pair(anonymous, emulator)
    assert pair["expires_in"] == 60
    emulator.clock.advance(59)
    assert anonymous.get(CONTACTS, headers=bearer(pair["access_token"])).status_code == 200
    emulator.clock.advance(1)
    assert anonymous.get(CONTACTS, headers=bearer(pair["access_token"])).status_code == 401
    fresh = grant(
        anonymous, emulator, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    ).json()
    assert anonymous.get(CONTACTS, headers=bearer(fresh["access_token"])).status_code == 200


def test_admin_expiry_and_revocation(anonymous, emulator) -> None:
    pair = code_pair(anonymous, emulator)
    anonymous.post("/_emulator/tokens/expire")
    assert anonymous.get(CONTACTS, headers=bearer(pair["access_token"])).status_code == 401
    assert anonymous.get(CONTACTS, headers=bearer(emulator.long_lived_token)).status_code == 401
    refreshed = grant(
        anonymous, emulator, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    ).json()
    assert anonymous.get(CONTACTS, headers=bearer(refreshed["access_token"])).status_code == 200
    anonymous.post("/_emulator/tokens/revoke")
    assert anonymous.get(CONTACTS, headers=bearer(refreshed["access_token"])).status_code == 401
    again = grant(
        anonymous, emulator, grant_type="refresh_token", refresh_token=refreshed["refresh_token"]
    )
    assert again.status_code == 401


@pytest.mark.parametrize("mode", ["long_lived", "oauth"])
def test_auth_modes_accept_only_their_token(make_settings, mode) -> None:
    emulator = Emulator(make_settings(auth_mode=mode, long_lived_token="fixed-token"))
    with httpx.Client(
        verify=SSL, transport=EmulatorTransport(emulator), base_url="http://e.test"
    ) as http:
        long_lived = http.get(CONTACTS, headers=bearer("fixed-token")).status_code
        if mode == "long_lived":
            assert long_lived == 200
            code = emulator.issue_auth_code()
            assert (
                grant(http, emulator, grant_type="authorization_code", code=code).status_code == 400
            )
        else:
            assert long_lived == 401
            access = emulator.issue_tokens()["access_token"]
            assert http.get(CONTACTS, headers=bearer(access)).status_code == 200


def test_an_access_token_dies_after_n_requests_and_its_successor_works(
    anonymous: httpx.Client, emulator: Emulator
) -> None:
    emulator.set_controls(token_max_requests=3)
    pair = code_pair(anonymous, emulator)
    statuses = [
        anonymous.get(CONTACTS, params={"limit": 1}, headers=bearer(pair["access_token"]))
        for _ in range(5)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 200, 401, 401]
    emulator.set_controls(token_max_requests=None)  # dead for good once dead
    assert anonymous.get(CONTACTS, headers=bearer(pair["access_token"])).status_code == 401
    fresh = refresher(anonymous, emulator)(pair["refresh_token"]).json()
    assert anonymous.get(CONTACTS, headers=bearer(fresh["access_token"])).status_code == 200
    # the request log tells the tokens apart without holding them
    prints = [r["token"] for r in emulator.requests() if r["path"] == CONTACTS]
    assert len(set(prints)) == 2
    assert all(p and len(p) == 12 and p not in pair["access_token"] for p in prints)
