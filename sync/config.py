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
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from sync.config_checks import (
    Validator,
    amocrm_url,
    between,
    cron,
    database_url,
    field_policies,
    hook_secret,
    is_loopback_host,
    one_of,
    positive,
    printable,
    public_url,
    schema_name,
    secret_text,
    subset_of,
)
from sync.errors import ConfigError, ConfigProblem

ENV_PREFIX = "AMOSYNC_"
DEFAULT_CONFIG_FILE = "amosync.toml"
# Environment variables that start with the prefix but are not configuration keys.
NON_KEY_ENV = frozenset({"AMOSYNC_CONFIG", "AMOSYNC_TEST_DATABASE_URL"})


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


def _key(default: Any, *checks: Validator, secret: bool = False) -> Any:
    """A configuration key: its default plus validators run on the final value."""
    return field(default=default, metadata={"checks": checks, "secret": secret})


def _checks_of(hint: Any, checks: tuple[Validator, ...]) -> tuple[Validator, ...]:
    """Every plain string is printable; every secret has no control characters (a URL secret
    has its own, stricter check)."""
    if hint is str:
        return (printable, *checks)
    if hint is Secret and not checks:
        return (secret_text,)
    return checks


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
    events_interval_s: float = _key(300.0, between(0, 86_400))
    max_delete_share: float = _key(0.1, between(0.0, 1.0))
    pull_workers: int = _key(8, between(1, 32))

    @property
    def conflict_fields_map(self) -> dict[str, str]:
        """`conflict_fields` as {field: policy}."""
        return dict(item.split("=", 1) for item in self.conflict_fields)


@dataclass(frozen=True)
class DaemonConfig:
    http_port: int = _key(8085, between(0, 65535))
    http_host: str = _key("127.0.0.1")
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
    public_url: str = _key("", public_url)
    secret: Secret = _key(Secret(""), secret_text, hook_secret, secret=True)

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

    def require_amocrm_auth(self) -> None:
        """Commands that talk to amoCRM call this: some way to authenticate must be configured."""
        problems = _auth_problems(self.amocrm)
        if not (self.amocrm.access_token or self.amocrm.oauth.enabled):
            problems.append(
                ConfigProblem(
                    "amocrm.access_token",
                    "not set",
                    "set a long-lived token or the [amocrm.oauth] keys",
                )
            )
        if problems:
            raise ConfigError(problems)


def _toml_name(python_name: str) -> str:
    """`with_` is `with` in TOML (a Python keyword)."""
    return python_name.rstrip("_")


# --- loading ---------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, merge and validate the configuration; raise `ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    file_path, explicit = _choose_file(path, env)
    data = _read_toml(file_path, explicit, problems)
    loader = _Loader(str(file_path) if data is not None else "", env, problems)
    config: Config = loader.build(Config, data or {}, ())
    loader.report_unknown_env()
    problems.extend(_auth_problems(config.amocrm))
    problems.extend(_rate_problems(config.amocrm))
    reported = {problem.key for problem in problems}  # an invalid secret is not also "not set"
    problems.extend(p for p in _webhook_problems(config) if p.key not in reported)
    if problems:
        raise ConfigError(problems)
    return config


def _choose_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    if path is not None:
        return Path(path), True
    if env.get("AMOSYNC_CONFIG"):
        return Path(env["AMOSYNC_CONFIG"]), True
    return Path(DEFAULT_CONFIG_FILE), False


def _read_toml(path: Path, explicit: bool, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            problems.append(ConfigProblem("config file", str(path), "file not found"))
        return None
    except tomllib.TOMLDecodeError as exc:
        problems.append(ConfigProblem("config file", str(path), f"not valid TOML: {exc}"))
    except OSError as exc:
        problems.append(ConfigProblem("config file", str(path), f"cannot be read: {exc.strerror}"))
    return None


class _Loader:
    """Walks the dataclass tree, taking each key from the environment, the file or the default."""

    def __init__(self, file_name: str, env: Mapping[str, str], problems: list[ConfigProblem]):
        self.file_name = file_name
        self.env = env
        self.problems = problems
        self.used_env: set[str] = set()

    def build(self, cls: type[Any], table: Mapping[str, Any], prefix: tuple[str, ...]) -> Any:
        hints = get_type_hints(cls)
        known: set[str] = set()
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name == "source":
                continue
            name = _toml_name(spec.name)
            known.add(name)
            key = (*prefix, name)
            if is_dataclass(hints[spec.name]):
                sub = table.get(name, {})
                if not isinstance(sub, Mapping):
                    self._problem(key, self._file_source(key), "must be a table")
                    sub = {}
                values[spec.name] = self.build(hints[spec.name], sub, key)
            else:
                values[spec.name] = self._value(spec, hints[spec.name], table, key)
        for name in table:
            if name not in known:
                self._problem((*prefix, name), self._file_source((*prefix, name)), "unknown key")
        if cls is Config:
            values["source"] = self.file_name or "defaults"
        return cls(**values)

    def _value(self, spec: Any, hint: Any, table: Mapping[str, Any], key: tuple[str, ...]) -> Any:
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        env_name = ENV_PREFIX + "__".join(part.upper() for part in key)
        if env_name in self.env:
            self.used_env.add(env_name)
            source, raw = f"environment {env_name}", self.env[env_name]
            value = _coerce_env(raw, hint)
        elif key[-1] in table:
            source, value = self._file_source(key), _coerce_file(table[key[-1]], hint)
        else:
            return default
        if isinstance(value, _Invalid):
            self._problem(key, source, value.message)
            return default
        checks = spec.metadata.get("checks", ())
        for check in _checks_of(hint, checks):
            message = check(value)
            if message:
                self._problem(key, source, message)
                return default
        return value

    def _file_source(self, key: tuple[str, ...]) -> str:
        return f"file {self.file_name}" if self.file_name else "file"

    def _problem(self, key: tuple[str, ...], source: str, message: str) -> None:
        self.problems.append(ConfigProblem(".".join(key), source, message))

    def report_unknown_env(self) -> None:
        for name in sorted(self.env):
            if (
                name.startswith(ENV_PREFIX)
                and name not in NON_KEY_ENV
                and name not in self.used_env
            ):
                self.problems.append(
                    ConfigProblem(name, "environment", "does not name a configuration key")
                )


@dataclass(frozen=True)
class _Invalid:
    message: str


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce_env(raw: str, hint: Any) -> Any:
    """Environment values are strings; turn them into the key's type."""
    text = raw.strip()
    if hint is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        return _Invalid(f"must be true or false, got {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            return _Invalid(f"must be a number, got {text!r}")
    if hint == tuple[str, ...]:
        if text.startswith("["):
            try:
                return _coerce_file(tomllib.loads(f"v = {text}")["v"], hint)
            except tomllib.TOMLDecodeError:
                return _Invalid(f'must be a list such as ["a", "b"] or a,b; got {text!r}')
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if hint is Secret:
        return Secret(raw)
    return raw


def _coerce_file(value: Any, hint: Any) -> Any:
    """TOML values are typed already; check the type and widen int to float."""
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (str, Secret) and isinstance(value, str):
        return Secret(value) if hint is Secret else value
    if hint == tuple[str, ...] and isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return tuple(value)
        return _Invalid("must be a list of strings")
    expected = {float: "a number", int: "an integer", bool: "true or false"}.get(hint, "a string")
    if hint == tuple[str, ...]:
        expected = "a list of strings"
    if hint is Secret:  # never echo what was meant to be a secret
        return _Invalid(f"must be {expected}")
    return _Invalid(f"must be {expected}, got {type(value).__name__} {_preview(value)}")


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _auth_problems(amo: AmoCrmConfig) -> list[ConfigProblem]:
    """Cross-key rules for authentication (the keys themselves are checked one by one)."""
    problems: list[ConfigProblem] = []
    oauth = amo.oauth
    if amo.access_token and oauth.enabled:
        problems.append(
            ConfigProblem(
                "amocrm.access_token",
                "file/environment",
                "set either a long-lived access_token or [amocrm.oauth], not both",
            )
        )
    if oauth.enabled:
        for name in ("client_id", "client_secret", "redirect_uri"):
            if not getattr(oauth, name):
                problems.append(
                    ConfigProblem(
                        f"amocrm.oauth.{name}", "not set", "required when OAuth is configured"
                    )
                )
    return problems


def _rate_problems(amo: AmoCrmConfig) -> list[ConfigProblem]:
    if amo.max_rps > 7 and not amo.is_loopback:
        return [
            ConfigProblem(
                "amocrm.max_rps",
                "file/environment",
                f"{amo.max_rps:g} exceeds amoCRM's limit of 7 requests/s (an IP ban follows); "
                "values above 7 are allowed only against a loopback emulator",
            )
        ]
    return []


def _webhook_problems(config: Config) -> list[ConfigProblem]:
    """With webhooks on, the hook needs its secret path and the daemon's HTTP port."""
    hooks = config.webhooks
    if not hooks.enabled:
        return []
    problems = []
    if not hooks.secret:
        why = (
            "required when webhooks.enabled is true (the hook's path is /webhooks/amocrm/<secret>)"
        )
        problems.append(ConfigProblem("webhooks.secret", "not set", why))
    if not config.daemon.http_port:
        why = "must not be 0 when webhooks.enabled is true: the hook is served on that port"
        problems.append(ConfigProblem("daemon.http_port", "file/environment", why))
    return problems
