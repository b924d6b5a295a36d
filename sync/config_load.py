"""Loading the configuration: the file chosen (`--config`, `$AMOSYNC_CONFIG`, `./amosync.toml`),
its TOML read, every key of the dataclass tree in `sync.config` taken from the environment, the
file or its default and coerced to its type, each key's validators run and then the cross-key
rules (`sync.config_checks`) — every problem collected before `ConfigError` is raised.
`sync.config.load_config` is the entry point callers use.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from sync.config import Config, Secret
from sync.config_checks import (
    Validator,
    auth_problems,
    printable,
    rate_problems,
    secret_text,
    shown,
    webhook_problems,
)
from sync.errors import ConfigError, ConfigProblem

ENV_PREFIX = "AMOSYNC_"
DEFAULT_CONFIG_FILE = "amosync.toml"
# Environment variables that start with the prefix but are not configuration keys: the file's
# path, the tests' database, and the flags `amosync emulator` documents (AMOSYNC_EMULATOR_TOKEN,
# ..._CLIENT_SECRET, ..._ADMIN_KEY), which a shell running both must not turn into an error.
NON_KEY_ENV = frozenset({"AMOSYNC_CONFIG", "AMOSYNC_TEST_DATABASE_URL"})
NON_KEY_ENV_PREFIXES = ("AMOSYNC_EMULATOR_",)


def _checks_of(hint: Any, checks: tuple[Validator, ...]) -> tuple[Validator, ...]:
    """Every plain string is printable; every secret has no control characters (a URL secret
    has its own, stricter check)."""
    if hint is str:
        return (printable, *checks)
    if hint is Secret and not checks:
        return (secret_text,)
    return checks


def _unset_allowed(hint: Any) -> Any:
    """`float | None` (a key whose default is derived from others) is read as a float: unset
    is the only way to get None."""
    args = get_args(hint)
    if get_origin(hint) in (Union, UnionType) and len(args) == 2 and type(None) in args:
        return next(arg for arg in args if arg is not type(None))
    return hint


def _toml_name(python_name: str) -> str:
    """`with_` is `with` in TOML (a Python keyword)."""
    return python_name.rstrip("_")


# --- loading ---------------------------------------------------------------------------------


def warn_on_stderr(message: str) -> None:
    """A warning found while loading, before logging is configured: one line on stderr."""
    sys.stderr.write(f"amosync: warning: {message}\n")
    sys.stderr.flush()


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = warn_on_stderr,
    needs: Callable[[Config], list[ConfigProblem]] | None = None,
) -> Config:
    """Read, merge and validate the configuration; raise `ConfigError` listing every problem
    (warnings, which never stop the load, go to `warn`). `needs` gives what the command about
    to run needs beyond a valid configuration (a token to reach amoCRM, the webhook's keys, a
    database): checked here with the rest, so every problem is listed before any work starts."""
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    file_path, explicit = _choose_file(path, env)
    data = _read_toml(file_path, explicit, problems)
    loader = _Loader(str(file_path) if data is not None else "", env, problems)
    config: Config = loader.build(Config, data or {}, ())
    loader.report_unknown_env(warn)
    reported = {problem.key for problem in problems}  # a refused value is not also "not set"
    cross = [
        *auth_problems(config.amocrm, config.source_of),
        *rate_problems(config.amocrm, config.source_of),
        *webhook_problems(config),
        *(needs(config) if needs is not None else []),
    ]
    for problem in cross:  # one per key: a command's need may repeat a rule's
        if problem.key not in reported:
            problems.append(problem)
            reported.add(problem.key)
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
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            problems.append(ConfigProblem("config file", str(path), "file not found"))
        return None
    except OSError as exc:
        problems.append(ConfigProblem("config file", str(path), f"cannot be read: {exc.strerror}"))
        return None
    try:
        text = data.decode("utf-8").removeprefix(BOM)  # Windows editors write one: harmless
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem("config file", str(path), not_utf8(data, exc)))
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(ConfigProblem("config file", str(path), f"not valid TOML: {exc}"))
    return None


BOM = "\ufeff"  # UTF-8's byte-order mark, EF BB BF


def not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where a file that is not UTF-8 first fails to decode: the byte, its line and column
    (TOML files are UTF-8; a comment saved as cp1251 by a Russian editor is the usual cause)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "not UTF-8 but UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"
    start = exc.start
    line = data.count(b"\n", 0, start) + 1
    column = start - (data.rfind(b"\n", 0, start) + 1) + 1  # in bytes
    return (
        f"not UTF-8: byte 0x{data[start]:02x} at line {line}, column {column} (offset {start}) "
        "cannot be decoded (saved as cp1251 or another legacy encoding?): save it as UTF-8"
    )


class _Loader:
    """Walks the dataclass tree, taking each key from the environment, the file or the default."""

    def __init__(self, file_name: str, env: Mapping[str, str], problems: list[ConfigProblem]):
        self.file_name = file_name
        self.env = env
        self.problems = problems
        self.used_env: set[str] = set()
        self.sources: dict[str, str] = {}  # where each key that was set came from

    def build(self, cls: type[Any], table: Mapping[str, Any], prefix: tuple[str, ...]) -> Any:
        hints = get_type_hints(cls)
        known: set[str] = set()
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name in ("source", "key_sources"):
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
                values[spec.name] = self._value(spec, hints[spec.name], table, key, values)
        for name in table:
            if name not in known:
                self._problem((*prefix, name), self._file_source((*prefix, name)), "unknown key")
        if cls is Config:
            values["source"] = self.file_name or "defaults"
            values["key_sources"] = self.sources
        return cls(**values)

    def _value(
        self,
        spec: Any,
        hint: Any,
        table: Mapping[str, Any],
        key: tuple[str, ...],
        siblings: Mapping[str, Any],
    ) -> Any:
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        hint = _unset_allowed(hint)
        env_name = ENV_PREFIX + "__".join(part.upper() for part in key)
        if env_name in self.env:
            self.used_env.add(env_name)
            source, raw = f"environment {env_name}", self.env[env_name]
            value = _not_utf8_env(raw) or _coerce_env(raw, hint)
        elif key[-1] in table:
            source, value = self._file_source(key), _coerce_file(table[key[-1]], hint)
        else:
            return default
        self.sources[".".join(key)] = source
        if isinstance(value, _Invalid):
            self._problem(key, source, value.message)
            return default
        if not self._gate_open(spec.metadata.get("when"), key, siblings):
            return value  # the feature is off: its keys are never read, so not checked
        checks = spec.metadata.get("checks", ())
        for check in _checks_of(hint, checks):
            message = check(value)
            if message:
                self._problem(key, source, message)
                return default
        return value

    def _gate_open(
        self, gate: str | None, key: tuple[str, ...], siblings: Mapping[str, Any]
    ) -> bool:
        """Are a gated key's checks run? Yes when the gate is on, and when the gate's own value
        was refused (the user meant to switch it: show every problem at once)."""
        if not gate:
            return True
        gate_key = ".".join((*key[:-1], gate))
        return bool(siblings.get(gate)) or any(p.key == gate_key for p in self.problems)

    def _file_source(self, key: tuple[str, ...]) -> str:
        return f"file {self.file_name}" if self.file_name else "file"

    def _problem(self, key: tuple[str, ...], source: str, message: str) -> None:
        self.problems.append(ConfigProblem(".".join(key), source, message))

    def report_unknown_env(self, warn: Callable[[str], None]) -> None:
        """`AMOSYNC_<SECTION>__<KEY>` naming no key is a typo of one: a problem. A variable
        without `__` names no key by construction (another tool's, a shell's leftover): one
        warning line with its name (never its value), and the configuration loads."""
        for name in sorted(self.env):
            if (
                name.startswith(ENV_PREFIX)
                and name not in NON_KEY_ENV
                and not name.startswith(NON_KEY_ENV_PREFIXES)
                and name not in self.used_env
            ):
                if "__" in name[len(ENV_PREFIX) :]:
                    self.problems.append(
                        ConfigProblem(name, "environment", "does not name a configuration key")
                    )
                else:
                    warn(f"{name} is not a configuration key (AMOSYNC_<SECTION>__<KEY>): ignored")


@dataclass(frozen=True)
class _Invalid:
    message: str


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _not_utf8_env(raw: str) -> _Invalid | None:
    """A variable whose bytes are not UTF-8 (a cp1251 env file): Python holds each bad byte as a
    lone surrogate, which fails much later (an HTTP header, a log line); never shows the value."""
    for index, char in enumerate(raw):
        if "\udc80" <= char <= "\udcff":
            byte = ord(char) - 0xDC00
            return _Invalid(
                f"is not valid UTF-8: byte 0x{byte:02x} at character {index + 1}; value not shown"
            )
    return None


def _coerce_env(raw: str, hint: Any) -> Any:
    """Environment values are strings; turn them into the key's type."""
    text = raw.strip()
    if hint is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        return _Invalid(f"must be true or false, got {shown(text)}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            return _Invalid(f"must be a number, got {shown(text)}")
    if hint == tuple[str, ...]:
        if text.startswith("["):
            try:
                return _coerce_file(tomllib.loads(f"v = {text}")["v"], hint)
            except tomllib.TOMLDecodeError:
                return _Invalid(f'must be a list such as ["a", "b"] or a,b; got {shown(text)}')
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
    text = shown(value)
    return text if len(text) <= 40 else text[:37] + "..."
