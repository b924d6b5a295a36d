"""Which configured refresh token the stored OAuth pair has seen (`sync.amo.auth`): pure rules."""

from __future__ import annotations

from sync.amo.auth import SEED_KEY, TokenPair, seed_digest, stored_value, superseded
from sync.config import OAuthConfig, Secret

PAIR = TokenPair(Secret("access"), Secret("refresh"), 1_000, 87_400)


def oauth(refresh_token: str = "") -> OAuthConfig:
    return OAuthConfig(
        client_id="c", client_secret=Secret("s"), redirect_uri="https://x.example/cb",
        refresh_token=Secret(refresh_token),
    )  # fmt: skip


def test_a_token_the_store_has_seen_never_replaces_the_pair() -> None:
    value = stored_value(PAIR, oauth("first"), None)
    assert not superseded(oauth("first"), value)
    assert not superseded(oauth(""), value)  # nothing configured: the stored pair
    assert superseded(oauth("second"), value)  # never seen: the operator's new token
    replaced = stored_value(PAIR, oauth("second"), value)
    assert not superseded(oauth("second"), replaced)
    assert not superseded(oauth("first"), replaced)  # an earlier one: stale, not new


def test_only_hashes_are_stored_and_the_list_is_bounded() -> None:
    value = stored_value(PAIR, oauth("tok-0"), None)
    for n in range(1, 40):
        value = stored_value(PAIR, oauth(f"tok-{n}"), value)
    assert len(value[SEED_KEY]) == 16
    assert value[SEED_KEY][-1] == seed_digest(Secret("tok-39"))
    assert "tok-39" not in str(value[SEED_KEY])


def test_a_pair_stored_before_tokens_were_remembered_adopts_the_configured_token() -> None:
    legacy = PAIR.to_value()
    assert not superseded(oauth("whatever-is-configured"), legacy)
    assert stored_value(PAIR, oauth(""), legacy) == PAIR.to_value()  # seed unknown: stays so
    adopted = stored_value(PAIR, oauth("configured"), legacy)
    assert adopted[SEED_KEY] == [seed_digest(Secret("configured"))]


def test_a_pair_from_an_authorization_code_without_a_configured_token_takes_the_next_one() -> None:
    value = stored_value(PAIR, oauth(""), PAIR.to_value(), new=True)
    assert value[SEED_KEY] == []
    assert superseded(oauth("supplied-later"), value)
