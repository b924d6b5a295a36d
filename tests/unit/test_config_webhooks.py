"""The `[webhooks]` section: what the daemon's side needs, checked at load, secret never shown."""

from __future__ import annotations

import pytest

from sync.config import load_config
from sync.config_checks import MAX_SCHEMA_LENGTH
from sync.db.hooks import hooks_channel
from sync.errors import ConfigError

SECRET = "s3cr3t-Hook_path.0123456789"


def _problems(env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=env)
    assert SECRET not in str(caught.value)
    return {p.key: p.message for p in caught.value.problems}


def test_defaults_are_off_and_healthy_hooks_do_not_lengthen_the_poll() -> None:
    # a silent loss of every hook must cost no more than sync.poll_interval_s (issue 15 target)
    hooks = load_config(environ={}).webhooks
    assert (hooks.enabled, hooks.public_url, bool(hooks.secret)) == (False, "", False)
    assert (hooks.poll_interval_s, hooks.stale_after_s, hooks.min_pull_gap_s) == (0, 3600, 2)


def test_a_negative_hook_poll_interval_is_refused() -> None:
    found = _problems({"AMOSYNC_WEBHOOKS__POLL_INTERVAL_S": "-5"})
    assert "between 0 and 604800" in found["webhooks.poll_interval_s"]


def test_enabled_needs_a_secret_and_an_http_port() -> None:
    found = _problems({"AMOSYNC_WEBHOOKS__ENABLED": "true", "AMOSYNC_DAEMON__HTTP_PORT": "0"})
    assert "required when webhooks.enabled" in found["webhooks.secret"]
    assert "hook is served on that port" in found["daemon.http_port"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("x" * 129, "at most 128 characters"),
        (SECRET + "/x", "URL path segment"),
        (SECRET + " ", ""),
    ],
)
def test_a_secret_too_long_or_not_a_path_segment_is_refused_unseen(
    secret: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"AMOSYNC_WEBHOOKS__ENABLED": "1", "AMOSYNC_WEBHOOKS__SECRET": secret})
    (problem,) = caught.value.problems
    assert problem.key == "webhooks.secret"
    assert message in problem.message
    assert secret not in str(caught.value)


def test_the_secret_is_never_in_repr_and_the_path_holds_it() -> None:
    config = load_config(
        environ={"AMOSYNC_WEBHOOKS__ENABLED": "yes", "AMOSYNC_WEBHOOKS__SECRET": SECRET}
    )
    assert SECRET not in repr(config)
    assert config.webhooks.path == f"/webhooks/amocrm/{SECRET}"


@pytest.mark.parametrize(
    "url",
    ["https://user:pw@sync.example.com", "sync.example.com", "https://sync.example.com/?a=1"],
)
def test_public_url_must_be_a_url_without_credentials(url: str) -> None:
    found = _problems({"AMOSYNC_WEBHOOKS__ENABLED": "1", "AMOSYNC_WEBHOOKS__PUBLIC_URL": url})
    assert "webhooks.public_url" in found
    assert "pw" not in found["webhooks.public_url"]


def test_the_hooks_channel_of_the_longest_schema_fits_postgres() -> None:
    assert len(hooks_channel("s" * MAX_SCHEMA_LENGTH)) <= 63
