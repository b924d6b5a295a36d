"""Configuration problems as an operator reads them: every one listed, and a value echoed in a
message never shows the password of a URL, even one written without its scheme."""

from __future__ import annotations

import pytest

from sync.config import load_config
from sync.errors import ConfigError
from sync.redaction import hide_config_value

PASSWORD = "Hunter2pw"
HOOKS_ON = {"AMOSYNC_WEBHOOKS__ENABLED": "true", "AMOSYNC_WEBHOOKS__SECRET": "s" * 32}
OAUTH = {
    "AMOSYNC_AMOCRM__OAUTH__CLIENT_ID": "id",
    "AMOSYNC_AMOCRM__OAUTH__CLIENT_SECRET": "secret-of-client",
}


def refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load_config("/dev/null", environ=environ)
    return excinfo.value


@pytest.mark.parametrize(
    ("name", "value", "extra"),
    [
        ("AMOCRM__BASE_URL", f"ftp://user:{PASSWORD}@example.com", {}),
        ("AMOCRM__BASE_URL", f"example.amocrm.ru:{PASSWORD}@x", {}),
        ("AMOCRM__BASE_URL", f"https://u:{PASSWORD}@x.amocrm.ru\n", {}),
        ("AMOCRM__BASE_URL", f"https://u:{PASSWORD}'@x.amocrm.ru\t", {}),
        ("AMOCRM__OAUTH__REDIRECT_URI", f"https://u:{PASSWORD}@x.example\n", OAUTH),
        ("AMOCRM__OAUTH__REDIRECT_URI", f"x.example:{PASSWORD}@y\n", OAUTH),
        ("WEBHOOKS__PUBLIC_URL", f"sync.example:{PASSWORD}@x", HOOKS_ON),
        ("WEBHOOKS__PUBLIC_URL", f"https://u:{PASSWORD}@x.example/\n", HOOKS_ON),
        ("DATABASE__URL", f"mysql://u:{PASSWORD}@db/x", {}),
        ("DATABASE__URL", f"u:{PASSWORD}@db/x", {}),
        ("DATABASE__URL", f"postgresql://u:{PASSWORD}@db:port/x", {}),
        ("SYNC__FULL_RESYNC_CRON", f"u:{PASSWORD}@x * * * *", {}),
        ("LOGGING__LEVEL", f"u:{PASSWORD}@x", {}),
        ("DAEMON__HTTP_HOST", f"u:{PASSWORD}@x", {}),
        ("DAEMON__HTTP_PORT", f"u:{PASSWORD}@x", {}),
    ],
)
def test_a_refused_url_like_value_never_shows_its_password(
    name: str, value: str, extra: dict[str, str]
) -> None:
    error = refused({f"AMOSYNC_{name}": value, **extra})
    key = name.lower().replace("__", ".")
    assert [p.key for p in error.problems] == [key], str(error)
    assert PASSWORD not in str(error)


def test_a_config_value_is_quoted_with_its_userinfo_hidden() -> None:
    assert hide_config_value(f"ftp://user:{PASSWORD}@example.com") == "ftp://***@example.com"
    assert hide_config_value(f"example.amocrm.ru:{PASSWORD}@x") == "***@x"
    assert hide_config_value("https://example.amocrm.ru") == "https://example.amocrm.ru"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql://u:{PASSWORD}@localhost:notaport/db", "port that is not a number"),
        (f"postgresql://u:{PASSWORD}@localhost:5432,db2:5433/db", "port that is not a number"),
        (f"postgresql://u:{PASSWORD}@localhost:70000/db", "port 70000"),
    ],
)
def test_a_database_url_with_a_bad_port_is_a_config_problem_listed_with_the_others(
    url: str, says: str
) -> None:
    error = refused({"AMOSYNC_DATABASE__URL": url, "AMOSYNC_SYNC__PUSH_WORKERS": "0"})
    messages = {p.key: p.message for p in error.problems}
    assert set(messages) == {"database.url", "sync.push_workers"}
    assert says in messages["database.url"]
    assert PASSWORD not in str(error)


def test_a_database_url_with_a_port_loads() -> None:
    url = "postgresql://u:pw@db.internal:6432/crm?sslmode=require"
    assert load_config("/dev/null", environ={"AMOSYNC_DATABASE__URL": url}).database.url


def test_every_bad_conflict_fields_entry_is_named() -> None:
    entries = '["name=bogus", "zzz=local_wins", "cf:=manual", "cf:12=manual"]'
    error = refused({"AMOSYNC_SYNC__CONFLICT_FIELDS": entries})
    (problem,) = error.problems
    assert problem.key == "sync.conflict_fields"
    for bad in ("'name=bogus'", "'zzz=local_wins'", "'cf:=manual'"):
        assert bad in problem.message
    assert "cf:12" not in problem.message


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("", "must not be empty"),
        ("not a host", "IPv4 address or a host name"),
        ("-bad-.example", "IPv4 address or a host name"),
        ("::1", "IPv4 address"),
        ("0.0.0.0:8085", "IPv4 address or a host name"),
    ],
)
def test_a_bad_http_host_is_refused_at_start_with_the_other_problems(host: str, says: str) -> None:
    error = refused({"AMOSYNC_DAEMON__HTTP_HOST": host, "AMOSYNC_LOGGING__LEVEL": "loud"})
    messages = {p.key: p.message for p in error.problems}
    assert set(messages) == {"daemon.http_host", "logging.level"}
    assert says in messages["daemon.http_host"]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost", "sync-0.amosync.svc."])
def test_a_listen_address_or_host_name_loads(host: str) -> None:
    config = load_config("/dev/null", environ={"AMOSYNC_DAEMON__HTTP_HOST": host})
    assert config.daemon.http_host == host
