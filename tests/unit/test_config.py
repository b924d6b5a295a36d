"""Configuration: precedence, typing, every problem reported at once, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import Config, Secret, load_config
from sync.errors import ConfigError

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amosync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> dict[str, tuple[str, str]]:
    return {p.key: (p.source, p.message) for p in excinfo.value.problems}


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == Config()
    assert config.amocrm.max_rps == 7
    assert config.amocrm.page_size == 250
    assert config.database.embedded
    assert config.database.schema == "amocrm"
    assert config.sync.with_ == ("leads", "customers", "catalog_elements")
    assert config.sync.full_resync_cron == "0 3 * * *"
    assert config.daemon.http_port == 8085
    assert config.source == "defaults"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[amocrm]
base_url = "https://acme.amocrm.ru"
timeout_s = 10
[amocrm.oauth]
client_id = "cid"
client_secret = "file-secret"
redirect_uri = "https://acme.example/cb"
[sync]
with = ["leads"]
chats = false
""",
    )
    env = {
        "AMOSYNC_AMOCRM__TIMEOUT_S": "12.5",
        "AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": "r-token",
        "AMOSYNC_SYNC__WITH": "leads, customers",
        "AMOSYNC_DATABASE__URL": "postgresql://u:pw@db.internal/crm",
    }
    config = load_config(path, env)
    assert config.amocrm.base_url == "https://acme.amocrm.ru"
    assert config.amocrm.timeout_s == 12.5
    assert config.amocrm.oauth.client_secret.reveal() == "file-secret"
    assert config.amocrm.oauth.refresh_token.reveal() == "r-token"
    assert config.sync.with_ == ("leads", "customers")
    assert config.sync.chats is False
    assert not config.database.embedded
    assert config.source == str(path)


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[logging]\nlevel = "debug"\n')
    assert load_config(environ={"AMOSYNC_CONFIG": str(path)}).logging.level == "debug"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[amocrm]
base_url = "http://crm.example.com"
page_size = 500
batch_size = "fifty"
tiemout_s = 3
[sync]
conflict_policy = "first_wins"
with = ["leads", "notes"]
full_resync_cron = "61 * * * *"
[logging]
format = "xml"
""",
    )
    env = {
        "AMOSYNC_DAEMON__HTTP_PORT": "eighty",
        "AMOSYNC_SYNC__CHATS": "maybe",
        "AMOSYNC_DATABASE__SCHEMA": "Bad-Schema",
        "AMOSYNC_DATABSE__URL": "postgresql://x",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    found = problems(caught)
    assert set(found) == {
        "amocrm.base_url",
        "amocrm.page_size",
        "amocrm.batch_size",
        "amocrm.tiemout_s",
        "sync.conflict_policy",
        "sync.with",
        "sync.full_resync_cron",
        "logging.format",
        "daemon.http_port",
        "sync.chats",
        "database.schema",
        "AMOSYNC_DATABSE__URL",
    }
    assert found["amocrm.base_url"] == (
        f"file {path}",
        "plain http:// is refused for non-loopback hosts (the token would travel in clear)",
    )
    assert found["amocrm.page_size"][1] == "must be between 1 and 250, got 500"
    assert found["amocrm.batch_size"][1] == "must be an integer, got str 'fifty'"
    assert found["amocrm.tiemout_s"][1] == "unknown key"
    assert found["daemon.http_port"] == (
        "environment AMOSYNC_DAEMON__HTTP_PORT",
        "must be a number, got 'eighty'",
    )
    assert "notes" in found["sync.with"][1]
    assert found["AMOSYNC_DATABSE__URL"][1] == "does not name a configuration key"
    message = str(caught.value)
    assert message.startswith("invalid configuration (12 problems):")


def test_plain_http_is_allowed_for_loopback_emulator() -> None:
    env = {"AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:8900", "AMOSYNC_AMOCRM__MAX_RPS": "50"}
    config = _load(env)
    assert config.amocrm.is_loopback
    assert config.amocrm.max_rps == 50


def _load(env: dict[str, str]) -> Config:
    return load_config(environ=env)


def test_rate_above_amocrm_limit_is_refused_for_a_real_account() -> None:
    with pytest.raises(ConfigError) as caught:
        _load({"AMOSYNC_AMOCRM__BASE_URL": "https://a.amocrm.ru", "AMOSYNC_AMOCRM__MAX_RPS": "8"})
    assert "exceeds amoCRM's limit of 7 requests/s" in problems(caught)["amocrm.max_rps"][1]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"AMOSYNC_AMOCRM__OAUTH__CLIENT_ID": "x"}, "amocrm.oauth.client_secret"),
        (
            {
                "AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN,
                "AMOSYNC_AMOCRM__OAUTH__CLIENT_ID": "x",
                "AMOSYNC_AMOCRM__OAUTH__CLIENT_SECRET": "y",
                "AMOSYNC_AMOCRM__OAUTH__REDIRECT_URI": "https://z",
            },
            "amocrm.access_token",
        ),
        ({"AMOSYNC_DATABASE__URL": "mysql://root@localhost/x"}, "database.url"),
        ({"AMOSYNC_AMOCRM__BASE_URL": "https://a.amocrm.ru/api/v4"}, "amocrm.base_url"),
    ],
)
def test_cross_key_and_format_rules(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(env)
    assert key in problems(caught)


def test_commands_that_call_amocrm_require_a_token() -> None:
    with pytest.raises(ConfigError, match=r"amocrm\.access_token"):
        _load({}).require_amocrm_auth()
    _load({"AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN}).require_amocrm_auth()


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file \(.*nope\.toml\): file not found"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[amocrm\n"), {})


def test_secrets_never_show_in_repr_or_errors(tmp_path: Path) -> None:
    path = write(tmp_path, f'[amocrm]\naccess_token = "{TOKEN}"\nmax_rps = 0\n')
    env = {"AMOSYNC_DATABASE__URL": "postgresql://u:hunter2@db/x"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    assert TOKEN not in str(caught.value)
    config = load_config(path, {**env, "AMOSYNC_AMOCRM__MAX_RPS": "5"})
    for text in (repr(config), str(config), repr(config.amocrm), f"{config.amocrm.access_token}"):
        assert TOKEN not in text
        assert "hunter2" not in text
    assert config.amocrm.access_token == Secret(TOKEN)


def test_bad_secret_value_is_reported_without_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[amocrm]\naccess_token = 12345678\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert problems(caught)["amocrm.access_token"][1] == "must be a string"
    assert "12345678" not in str(caught.value)


def _leaf_keys(cls: type, prefix: str = "") -> dict[str, object]:
    """Every configuration key of the dataclass tree with its default, as dotted names."""
    import dataclasses

    keys: dict[str, object] = {}
    for spec in dataclasses.fields(cls):
        if spec.name in ("source", "key_sources"):
            continue
        name = prefix + spec.name.rstrip("_")
        default = (
            spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        )
        if dataclasses.is_dataclass(default):
            keys.update(_leaf_keys(type(default), name + "."))
        else:
            keys[name] = default
    return keys


def _flatten(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def test_example_file_documents_every_key_with_its_default() -> None:
    import tomllib

    example = Path(__file__).parents[2] / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    documented = _flatten(tomllib.loads(text))
    defaults = _leaf_keys(Config)
    # a key whose default is derived from others (unset: None) is shown commented out
    derived = {key for key, default in defaults.items() if default is None}
    for key in derived:
        assert f"\n# {key.rsplit('.', 1)[-1]} = " in text, key
        del defaults[key]
    assert set(documented) == set(defaults)
    for key, default in defaults.items():
        value = documented[key]
        shown = default.reveal() if isinstance(default, Secret) else default
        assert (tuple(value) if isinstance(value, list) else value) == shown, key
    assert load_config(example, {}) == Config(source=str(example))


@pytest.mark.parametrize(
    ("env", "key", "says"),
    [
        ({"AMOSYNC_DATABASE__SCHEMA": "s" * 47}, "database.schema", "at most 46 characters"),
        ({"AMOSYNC_DATABASE__SCHEMA": "amocrm\n"}, "database.schema", "control characters"),
        ({"AMOSYNC_AMOCRM__BASE_URL": "https://a.amocrm.ru\n"}, "amocrm.base_url", "newline"),
        ({"AMOSYNC_SYNC__CONFLICT_FIELDS": "name\n=manual"}, "sync.conflict_fields", "FIELD="),
        ({"AMOSYNC_SYNC__FULL_RESYNC_CRON": "0 3 * * *\n"}, "sync.full_resync_cron", "control"),
        ({"AMOSYNC_DAEMON__HTTP_HOST": "0.0.0.0\n"}, "daemon.http_host", "control characters"),
        ({"AMOSYNC_DATABASE__URL": "postgresql://u@db/x\n"}, "database.url", "control"),
        ({"AMOSYNC_DATABASE__LOCK_TIMEOUT_S": "-1"}, "database.lock_timeout_s", "between"),
        ({"AMOSYNC_DATABASE__STATEMENT_TIMEOUT_S": "x"}, "database.statement_timeout_s", "number"),
        ({"AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN + "\n"}, "amocrm.access_token", "newline"),
        ({"AMOSYNC_AMOCRM__ACCESS_TOKEN": " " + TOKEN}, "amocrm.access_token", "spaces"),
    ],
)
def test_values_that_would_break_the_daemon_later_are_refused(
    env: dict[str, str], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(env)
    found = problems(caught)
    assert set(found) == {key}
    assert says in found[key][1]
    assert found[key][0] == f"environment AMOSYNC_{key.upper().replace('.', '__')}"


def test_longest_schema_gives_channels_postgres_accepts() -> None:
    from sync.db.capture import changes_channel, notify_channel

    config = _load({"AMOSYNC_DATABASE__SCHEMA": "s" * 46})
    assert len(notify_channel(config.database.schema).encode()) == 63
    assert len(changes_channel(config.database.schema).encode()) <= 63


def test_base_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    path = write(tmp_path, '[amocrm]\nbase_url = "https://admin:hunter2@acme.amocrm.ru"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    source, message = problems(caught)["amocrm.base_url"]
    assert source == f"file {path}"
    assert "credentials (user:password@)" in message
    assert "hunter2" not in str(caught.value)
    assert "admin" not in str(caught.value)


def test_timeouts_come_from_the_environment_and_zero_disables() -> None:
    env = {"AMOSYNC_DATABASE__LOCK_TIMEOUT_S": "0", "AMOSYNC_DATABASE__STATEMENT_TIMEOUT_S": "2.5"}
    database = _load(env).database
    assert (database.lock_timeout_s, database.statement_timeout_s) == (0, 2.5)
    assert (Config().database.lock_timeout_s, Config().database.statement_timeout_s) == (10, 300)


def test_patterns_match_the_whole_value_not_up_to_a_newline() -> None:
    from sync.config_checks import field_policies, schema_name

    assert schema_name("amocrm\n") is not None
    assert schema_name("amocrm") is None
    assert field_policies(["name\n=manual"]) is not None
    assert field_policies(["cf:PHONE=local_wins"]) is None
    assert field_policies(["cf:phone=local_wins"]) is None  # codes are case-insensitive
    assert field_policies(["cf:PHO NE=local_wins"]) is not None


def test_a_refused_secret_is_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        _load({"AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN + "\n"})
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "key",
    [
        "AMOSYNC_AMOCRM__TIMEOUT_S",
        "AMOSYNC_SYNC__POLL_INTERVAL_S",
        "AMOSYNC_SYNC__PUSH_INTERVAL_S",
        "AMOSYNC_DAEMON__REQUESTS_POLL_S",
    ],
)
def test_an_infinite_interval_is_refused_at_load(key: str) -> None:
    """`inf` passed "greater than 0" and crashed later with a traceback: APScheduler's interval
    and the socket timeout overflow on it."""
    with pytest.raises(ConfigError) as caught:
        _load({key: "inf"})
    dotted = key.removeprefix("AMOSYNC_").lower().replace("__", ".")
    assert "finite" in problems(caught)[dotted][1]


@pytest.mark.parametrize("flag", ["TOKEN", "CLIENT_SECRET", "ADMIN_KEY"])
def test_the_emulators_own_variables_are_not_configuration_problems(flag: str) -> None:
    """`amosync emulator` documents these; exported in a shell, they must not stop every other
    command with "does not name a configuration key"."""
    assert _load({f"AMOSYNC_EMULATOR_{flag}": "value"}) == Config()


@pytest.mark.parametrize("driver", ["", "+psycopg", "+psycopg2"])
def test_a_psycopg2_url_runs_on_psycopg(driver: str) -> None:
    """The contract's `database.url` is a SQLAlchemy/psycopg URL: a psycopg2 one (copied from an
    app that uses it; the same libpq parameters) is read with psycopg 3, the driver installed."""
    from sync.db.engine import database_url

    config = _load({"AMOSYNC_DATABASE__URL": f"postgresql{driver}://u:pw@db.internal/crm"})
    url = database_url(config.database)
    assert (url.drivername, url.host, url.database) == ("postgresql+psycopg", "db.internal", "crm")


def test_a_variable_without_the_section_separator_is_warned_about_by_name_only() -> None:
    """`AMOSYNC_FOO` cannot name a key (keys are `AMOSYNC_<SECTION>__<KEY>`): another tool's, a
    shell's leftover. One warning line with its name, never its value, and the load goes on."""
    from sync.config_load import load

    warned: list[str] = []
    config = load(None, {"AMOSYNC_PROFILE": "hidden-value", "AMOSYNC_HOME": "/x"}, warned.append)
    assert config == Config()
    assert len(warned) == 2
    assert "AMOSYNC_HOME" in warned[0]
    assert "AMOSYNC_PROFILE" in warned[1]
    assert not any("hidden-value" in line or "/x" in line for line in warned)


def test_the_warning_goes_to_stderr_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _load({"AMOSYNC_PROFILE": "hidden-value"})
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "AMOSYNC_PROFILE" in err
    assert "hidden-value" not in err


@pytest.mark.parametrize("name", ["AMOSYNC_SYNC__POLL_INTERVAL", "AMOSYNC_WEBHOOK__SECRET"])
def test_a_variable_with_the_section_separator_naming_no_key_is_a_typo(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load({name: "1"})
    assert problems(caught)[name][1] == "does not name a configuration key"


def test_events_interval_unset_scales_with_the_poll_interval_up_to_300_s() -> None:
    assert _load({}).sync.events_interval_s is None
    assert _load({}).sync.events_every_s == 180
    assert _load({"AMOSYNC_SYNC__POLL_INTERVAL_S": "2"}).sync.events_every_s == 6
    assert _load({"AMOSYNC_SYNC__POLL_INTERVAL_S": "600"}).sync.events_every_s == 300
    explicit = {"AMOSYNC_SYNC__POLL_INTERVAL_S": "2", "AMOSYNC_SYNC__EVENTS_INTERVAL_S": "0"}
    assert _load(explicit).sync.events_every_s == 0
    with pytest.raises(ConfigError) as caught:
        _load({"AMOSYNC_SYNC__EVENTS_INTERVAL_S": "-1"})
    assert "between 0 and 86400" in problems(caught)["sync.events_interval_s"][1]
