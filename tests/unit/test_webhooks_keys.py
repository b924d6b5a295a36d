"""The `[webhooks]` section: validated at load (exit 2, every problem at once), the secret never
shown in a message, a repr or a log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import Config, Secret, WebhooksConfig, load_config
from sync.config_urls import hook_warnings
from sync.errors import ConfigError
from sync.logs import redact_text, redact_value

SECRET = "Zq3-xY9_vLk2.Pw8~mN4rT6uB"


def load(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "amosync.toml"
    path.write_text(f"[webhooks]\n{body}\n", encoding="utf-8")
    return load_config(path, env or {})


def problems_of(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body, env)
    assert caught.value.exit_code == 2
    assert SECRET not in str(caught.value)
    return {p.key: p.message for p in caught.value.problems}


def test_defaults_are_off() -> None:
    hooks = Config().webhooks
    assert (hooks.enabled, hooks.public_url, hooks.secret.reveal()) == (False, "", "")


def test_a_complete_section(tmp_path: Path) -> None:
    config = load(tmp_path, f'enabled = true\npublic_url = "https://sync.example.com/"\n'
                            f'secret = "{SECRET}"')  # fmt: skip
    hooks = config.webhooks
    assert hooks.enabled
    assert hooks.destination == f"https://sync.example.com/webhooks/amocrm/{SECRET}"
    assert hooks.masked_destination == "https://sync.example.com/webhooks/amocrm/Zq3-…"
    assert SECRET not in repr(config)
    assert SECRET not in str(hooks.secret)


def test_the_secret_from_the_environment(tmp_path: Path) -> None:
    config = load(tmp_path, "enabled = true", {"AMOSYNC_WEBHOOKS__SECRET": SECRET})
    assert config.webhooks.secret.reveal() == SECRET


def test_enabled_needs_a_secret(tmp_path: Path) -> None:
    found = problems_of(tmp_path, "enabled = true")
    assert "required when webhooks.enabled is true" in found["webhooks.secret"]


ON = {"AMOSYNC_WEBHOOKS__ENABLED": "true"}


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("x" * 129, "at most 128 characters"),
        ("has/a/slash/in/it/for/sure", "letters, digits"),
        ("with spaces inside the secret", "letters, digits"),
        ("ünïcödé-sécret-långer-than-16", "letters, digits"),
        (SECRET + "\n", "control characters"),
    ],
)
def test_bad_secrets_are_refused_without_being_shown(
    tmp_path: Path, secret: str, words: str
) -> None:
    found = problems_of(tmp_path, "", {**ON, "AMOSYNC_WEBHOOKS__SECRET": secret})
    assert words in found["webhooks.secret"]
    assert secret.strip() not in found["webhooks.secret"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://sync.example.com", "absolute https:// URL"),
        ("https://sync example.com", "has a space at character 13"),
        ("sync.example.com", "absolute https:// URL"),
        ("https://sync.example.com?x=1", "query or fragment"),
        ("https://user:pw@sync.example.com", "credentials"),
        ("https://sync.example.com\n", "control characters"),
    ],
)
def test_bad_public_urls(tmp_path: Path, url: str, words: str) -> None:
    found = problems_of(tmp_path, "", {**ON, "AMOSYNC_WEBHOOKS__PUBLIC_URL": url})
    assert words in found["webhooks.public_url"]
    assert "pw" not in found["webhooks.public_url"]


@pytest.mark.parametrize(
    "url", ["https://sync.example.com", "https://example.com/amosync", "http://127.0.0.1:8085",
            "http://localhost:9000/", "http://amosync.internal:8085"],
)  # fmt: skip
def test_good_public_urls(tmp_path: Path, url: str) -> None:
    # plain http to another host is allowed (a stand-in, an internal network): warned, not refused
    assert load(tmp_path, f'public_url = "{url}"', ON | {"AMOSYNC_WEBHOOKS__SECRET": SECRET})\
        .webhooks.public_url == url  # fmt: skip


def test_a_short_secret_is_accepted_when_enabled() -> None:
    env = {**ON, "AMOSYNC_WEBHOOKS__SECRET": "test-secret"}
    assert load_config(environ=env).webhooks.secret.reveal() == "test-secret"


@pytest.mark.parametrize(
    "env",
    [{"AMOSYNC_WEBHOOKS__SECRET": "test-secret"},  # a test suite's: short
     {"AMOSYNC_WEBHOOKS__SECRET": "has/a/slash and spaces"},
     {"AMOSYNC_WEBHOOKS__PUBLIC_URL": "not a url"},
     {"AMOSYNC_WEBHOOKS__PUBLIC_URL": "https://user:pw@sync.example.com"}],
)  # fmt: skip
def test_with_webhooks_off_secret_and_public_url_are_not_checked(env: dict[str, str]) -> None:
    assert not load_config(environ=env).webhooks.enabled


def test_every_problem_at_once(tmp_path: Path) -> None:
    # `enabled` refused: the user meant to switch hooks on, so their keys are checked too
    found = problems_of(tmp_path, 'enabled = "yes"\npublic_url = "x.example.com"\n'
                                  'secret = "has/a/slash"\nunknown = 1')  # fmt: skip
    assert set(found) == {"webhooks.enabled", "webhooks.public_url", "webhooks.secret",
                          "webhooks.unknown"}  # fmt: skip


@pytest.mark.parametrize(
    ("secret", "url", "warned"),
    [
        (SECRET, "https://sync.example.com", []),
        (SECRET, "http://127.0.0.1:8085", []),
        ("test-secret", "https://sync.example.com", ["shorter than 16"]),
        (SECRET, "http://sync.example.com", ["in clear"]),
        ("test-secret", "http://10.0.0.5", ["shorter than 16", "in clear"]),
    ],
)
def test_weak_but_allowed_hooks_are_warned_about_without_the_secret(
    secret: str, url: str, warned: list[str]
) -> None:
    warnings = hook_warnings(secret, url)
    assert len(warnings) == len(warned)
    for warning, words in zip(warnings, warned, strict=True):
        assert words in warning
        assert secret not in warning


def test_the_hook_path_is_masked_in_logs() -> None:
    line = f"POST /webhooks/amocrm/{SECRET} answered 404"
    assert redact_text(line) == "POST /webhooks/amocrm/*** answered 404"
    hooks = WebhooksConfig(secret=Secret(SECRET))
    assert redact_value("config", {"secret": hooks.secret}) == {"secret": "***"}
    url = redact_value("url", hooks.destination)
    assert url == "/webhooks/amocrm/***"
