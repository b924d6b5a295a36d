"""Configuration: a TOML file plus `AMOSYNC_*` environment overrides → frozen dataclasses.

Where a value comes from, in order of precedence:
  1. the environment: `AMOSYNC_<SECTION>__<KEY>`, nested sections joined by `__`
     (`AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN`);
  2. the TOML file: `--config PATH`, else `$AMOSYNC_CONFIG`, else `./amosync.toml` (optional);
  3. the default written on the dataclass field (and in `config.example.toml`).

Every problem is collected before anything fails, so a user fixes them all in one go; each names the
key, where its value came from and what is wrong (`ConfigError`, exit code 2). Secrets are held in
`Secret`, whose `repr` and `str` never show the value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sync.config_checks import (
    Validator,
    auth_problems,
    auth_required,
    between,
    cron,
    field_policies,
    one_of,
    positive,
    schema_name,
    secret_text,
    subset_of,
)
from sync.config_urls import (
    amocrm_url,
    database_url,
    hook_secret,
    is_loopback_host,
    listen_host,
    public_url,
)
from sync.errors import ConfigError, ConfigProblem


class Secret:
    """A string that never shows itself in `repr`, `str`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def _key(default: Any, *checks: Validator, secret: bool = False, when: str = "") -> Any:
    """A configuration key: its default plus validators run on the final value (with `when`,
    only if that boolean key of the same section is true: a key a feature that is off never
    reads is not checked)."""
    return field(default=default, metadata={"checks": checks, "secret": secret, "when": when})


# --- the configuration tree ------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthConfig:
    client_id: str = _key("")
    client_secret: Secret = _key(Secret(""), secret=True)
    redirect_uri: str = _key("")
    refresh_token: Secret = _key(Secret(""), secret=True)

    @property
    def enabled(self) -> bool:
        return bool(self.client_id or self.client_secret or self.refresh_token)


@dataclass(frozen=True)
class AmoCrmConfig:
    base_url: str = _key("https://example.amocrm.ru", amocrm_url)
    access_token: Secret = _key(Secret(""), secret=True)
    max_rps: float = _key(7.0, positive)
    timeout_s: float = _key(30.0, positive)
    page_size: int = _key(250, between(1, 250))
    batch_size: int = _key(50, between(1, 250))
    max_retries: int = _key(6, between(0, 20))
    oauth: OAuthConfig = field(default_factory=OAuthConfig)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.base_url).hostname or "")


@dataclass(frozen=True)
class DatabaseConfig:
    url: Secret = _key(Secret(""), database_url, secret=True)
    schema: str = _key("amocrm", schema_name)
    embedded_dir: str = _key(".amosync")
    # seconds the sync's own statements wait for a lock / run at most; 0 disables
    lock_timeout_s: float = _key(10.0, between(0, 3600))
    statement_timeout_s: float = _key(300.0, between(0, 86_400))

    @property
    def embedded(self) -> bool:
        return not self.url


EVENTS_POLLS, EVENTS_MAX_S = 3, 300.0  # the default of sync.events_interval_s (`events_every_s`)


@dataclass(frozen=True)
class SyncConfig:
    poll_interval_s: float = _key(60.0, positive)
    push_interval_s: float = _key(15.0, positive)
    full_resync_cron: str = _key("0 3 * * *", cron)
    with_: tuple[str, ...] = _key(
        ("leads", "customers", "catalog_elements"),
        subset_of("leads", "customers", "catalog_elements"),
    )
    chats: bool = _key(True)
    conflict_policy: str = _key(
        "newest_wins", one_of("newest_wins", "remote_wins", "local_wins", "manual")
    )
    conflict_fields: tuple[str, ...] = _key((), field_policies)
    push_workers: int = _key(6, between(1, 32))
    overlap_s: int = _key(300, between(0, 86_400))
    push_debounce_s: float = _key(0.3, between(0, 60))
    push_debounce_max_s: float = _key(1.0, between(0, 600))
    # unset (None): `events_every_s` derives it from poll_interval_s
    events_interval_s: float | None = _key(None, between(0, 86_400))
    max_delete_share: float = _key(0.1, between(0.0, 1.0))
    pull_workers: int = _key(8, between(1, 32))

    @property
    def events_every_s(self) -> float:
        """How often an idle poll of the daemon reads deletion events (`sync.pull.memo`): the
        key when set (0: every poll), else every third poll, at most every `EVENTS_MAX_S`, so a
        short poll interval also sees remote deletions within a few polls."""
        if self.events_interval_s is not None:
            return self.events_interval_s
        return min(EVENTS_POLLS * self.poll_interval_s, EVENTS_MAX_S)

    @property
    def conflict_fields_map(self) -> dict[str, str]:
        """`conflict_fields` as {field: policy}."""
        return dict(item.split("=", 1) for item in self.conflict_fields)


@dataclass(frozen=True)
class DaemonConfig:
    http_port: int = _key(8085, between(0, 65535))
    http_host: str = _key("127.0.0.1", listen_host)
    migrate: bool = _key(True)
    unhealthy_after_polls: int = _key(3, between(1, 100))
    requests_poll_s: float = _key(2.0, positive)
    shutdown_timeout_s: float = _key(10.0, between(0, 14))
    keep_runs_days: int = _key(30, between(0, 3650))


@dataclass(frozen=True)
class WebhooksConfig:
    """amoCRM webhooks as hints: `amosync run` serves POST /webhooks/amocrm/<secret>, and
    `amosync webhooks register` subscribes public_url + that path."""

    enabled: bool = _key(False)
    public_url: str = _key("", public_url, when="enabled")
    secret: Secret = _key(Secret(""), secret_text, hook_secret, secret=True, when="enabled")

    # polling while hooks are known to arrive (0: sync.poll_interval_s, the default, so a silent
    # loss of every hook costs no more than polling alone); sync.poll_interval_s otherwise
    poll_interval_s: float = _key(0.0, between(0, 604_800))
    stale_after_s: float = _key(3600.0, positive)  # no hook for this long: back to the short poll
    announce_grace_s: float = _key(30.0, between(1, 3600))  # a hook may lag its change this long
    min_pull_gap_s: float = _key(2.0, between(0, 3600))  # hook-triggered pulls at most this often
    check_interval_s: float = _key(300.0, between(30, 86_400))  # GET /api/v4/webhooks this often

    HOOK_PATH = "/webhooks/amocrm/"

    @property
    def path(self) -> str:
        """The hook's path on the daemon's HTTP port (it holds the secret: never log it)."""
        return self.HOOK_PATH + self.secret.reveal()

    @property
    def destination(self) -> str:
        """The URL amoCRM posts to (holds the secret: never print or log it; see `masked`)."""
        return self.public_url.rstrip("/") + self.HOOK_PATH + self.secret.reveal()

    @property
    def masked_destination(self) -> str:
        """`destination` with all but the secret's first 4 characters hidden."""
        return self.public_url.rstrip("/") + self.HOOK_PATH + mask_secret(self.secret.reveal())


def mask_secret(secret: str) -> str:
    """The first 4 characters and an ellipsis: enough to tell two secrets apart."""
    return secret[:4] + "…" if secret else ""


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _key("info", one_of("debug", "info", "warning", "error"))
    format: str = _key("auto", one_of("auto", "json", "console"))


@dataclass(frozen=True)
class Config:
    amocrm: AmoCrmConfig = field(default_factory=AmoCrmConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = "defaults"  # the file the values came from, for messages
    # where each key that was set came from, by dotted name ("file amosync.toml", "environment
    # AMOSYNC_AMOCRM__MAX_RPS"); not a key itself, and left out of comparisons
    key_sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def source_of(self, key: str) -> str:
        """Where `key` (dotted) came from, as a problem names it; "default" when it was not set."""
        return self.key_sources.get(key, "default")

    def require_amocrm_auth(self) -> None:
        """Commands that talk to amoCRM call this: some way to authenticate must be configured."""
        problems = auth_problems(self.amocrm, self.source_of) + auth_required(self.amocrm)
        if problems:
            raise ConfigError(problems)


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    needs: Callable[[Config], list[ConfigProblem]] | None = None,
) -> Config:
    """Read, merge and validate the configuration (`sync.config_load`), and what the command
    about to run `needs` of it; raise `ConfigError` listing every problem."""
    from sync.config_load import load

    return load(path, environ, needs=needs)
