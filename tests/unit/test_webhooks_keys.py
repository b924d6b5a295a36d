"""The `[webhooks]` section: validated at load (exit 2, every problem at once), the secret never
shown in a message, a repr or a log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import Config, Secret, WebhooksConfig, load_config
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


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("short-secret", "16 to 128 characters"),
        ("x" * 129, "16 to 128 characters"),
        ("has/a/slash/in/it/for/sure", "letters, digits"),
        ("with spaces inside the secret", "letters, digits"),
        ("ünïcödé-sécret-långer-than-16", "letters, digits"),
        (SECRET + "\n", "control characters"),
    ],
)
def test_bad_secrets_are_refused_without_being_shown(
    tmp_path: Path, secret: str, words: str
) -> None:
    found = problems_of(tmp_path, "", {"AMOSYNC_WEBHOOKS__SECRET": secret})
    assert words in found["webhooks.secret"]
    assert secret.strip() not in found["webhooks.secret"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://sync.example.com", "must be https://"),
        ("ftp://sync.example.com", "absolute https:// URL"),
        ("sync.example.com", "absolute https:// URL"),
        ("https://sync.example.com?x=1", "query or fragment"),
        ("https://user:pw@sync.example.com", "credentials"),
        ("https://sync.example.com\n", "control characters"),
    ],
)
def test_bad_public_urls(tmp_path: Path, url: str, words: str) -> None:
    found = problems_of(tmp_path, "", {"AMOSYNC_WEBHOOKS__PUBLIC_URL": url})
    assert words in found["webhooks.public_url"]
    assert "pw" not in found["webhooks.public_url"]


@pytest.mark.parametrize(
    "url", ["https://sync.example.com", "https://example.com/amosync", "http://127.0.0.1:8085",
            "http://localhost:9000/"],
)  # fmt: skip
def test_good_public_urls(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f'public_url = "{url}"').webhooks.public_url == url


def test_every_problem_at_once(tmp_path: Path) -> None:
    found = problems_of(tmp_path, 'enabled = "yes"\npublic_url = "http://x.example.com"\n'
                                  'secret = "tiny"\nunknown = 1')  # fmt: skip
    assert set(found) == {"webhooks.enabled", "webhooks.public_url", "webhooks.secret",
                          "webhooks.unknown"}  # fmt: skip


def test_the_hook_path_is_masked_in_logs() -> None:
    line = f"POST /webhooks/amocrm/{SECRET} answered 404"
    assert redact_text(line) == "POST /webhooks/amocrm/*** answered 404"
    hooks = WebhooksConfig(secret=Secret(SECRET))
    assert redact_value("config", {"secret": hooks.secret}) == {"secret": "***"}
    url = redact_value("url", hooks.destination)
    assert url == "/webhooks/amocrm/***"
