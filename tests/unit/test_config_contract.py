"""CONTRACT.md's configuration clause, as an audit found it broken: a file that is not UTF-8 or
starts with a BOM, a rule about two keys naming no real source, a URL whose host cannot be
resolved, a refused character named wrongly, a command's needs checked after work began."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import load_config
from sync.config_checks import auth_required
from sync.config_urls import amocrm_url, public_url
from sync.errors import ConfigError

COMMENT_CP1251 = "# комментарий\n".encode("cp1251")


@pytest.fixture(autouse=True)
def _no_file_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./amosync.toml of the directory the tests run from."""
    monkeypatch.chdir(tmp_path)


def problems_of(path: Path | None, env: dict[str, str]) -> dict[str, tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    return {p.key: (p.source, p.message) for p in caught.value.problems}


def test_a_file_in_cp1251_is_a_problem_naming_the_byte_its_line_and_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "amosync.toml"
    path.write_bytes(b'[database]\nschema = "crm"\n' + COMMENT_CP1251)
    found = problems_of(path, {})
    assert list(found) == ["config file"]
    source, message = found["config file"]
    assert source == str(path)
    assert message.startswith("not UTF-8: byte 0xea at line 3, column 3 (offset 28)")
    assert "save it as UTF-8" in message


def test_the_environment_chooses_a_file_that_is_not_utf8_the_same(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_bytes(COMMENT_CP1251)
    found = problems_of(None, {"AMOSYNC_CONFIG": str(path)})
    assert found["config file"][0] == str(path)
    assert "line 1, column 3" in found["config file"][1]


def test_a_utf16_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "amosync.toml"
    path.write_bytes('[database]\nschema = "crm"\n'.encode("utf-16"))  # with its BOM
    assert "UTF-16" in problems_of(path, {})["config file"][1]


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "amosync.toml"
    path.write_bytes(b'\xef\xbb\xbf[database]\nschema = "crm"\n')
    assert load_config(path, {}).database.schema == "crm"


def test_an_environment_value_that_is_not_utf8_is_refused_unshown() -> None:
    # os.environ holds the byte 0xea of a cp1251 env file as the lone surrogate U+DCEA
    found = problems_of(None, {"AMOSYNC_AMOCRM__ACCESS_TOKEN": "abc\udcea"})
    source, message = found["amocrm.access_token"]
    assert source == "environment AMOSYNC_AMOCRM__ACCESS_TOKEN"
    assert message == "is not valid UTF-8: byte 0xea at character 4; value not shown"


TWO_WAYS = """
[amocrm]
base_url = "https://x.amocrm.ru"
max_rps = 50
access_token = "t"
[amocrm.oauth]
client_id = "a"
client_secret = "b"
redirect_uri = "https://r.example"
"""


def test_rules_about_two_keys_name_each_keys_source(tmp_path: Path) -> None:
    path = tmp_path / "src.toml"
    path.write_text(TWO_WAYS, encoding="utf-8")
    found = problems_of(path, {})
    file = f"file {path}"
    assert found["amocrm.access_token"] == (
        file,
        "set either a long-lived access_token or [amocrm.oauth], not both; also set: "
        f"amocrm.oauth.client_id, amocrm.oauth.client_secret ({file})",
    )
    assert found["amocrm.max_rps"][0] == file
    assert found["amocrm.max_rps"][1].endswith(f"and amocrm.base_url ({file}) is not one")
    assert "file/environment" not in str(found)


def test_a_key_from_the_environment_is_named_by_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "src.toml"
    path.write_text(TWO_WAYS, encoding="utf-8")
    env = {"AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN": "r", "AMOSYNC_AMOCRM__MAX_RPS": "9"}
    found = problems_of(path, env)
    assert found["amocrm.max_rps"][0] == "environment AMOSYNC_AMOCRM__MAX_RPS"
    assert found["amocrm.access_token"][1].endswith(
        "; amocrm.oauth.refresh_token (environment AMOSYNC_AMOCRM__OAUTH__REFRESH_TOKEN)"
    )


def test_the_hook_port_rule_names_both_sources(tmp_path: Path) -> None:
    path = tmp_path / "amosync.toml"
    path.write_text('[webhooks]\nenabled = true\nsecret = "s" \n', encoding="utf-8")
    found = problems_of(path, {"AMOSYNC_DAEMON__HTTP_PORT": "0"})
    assert found["daemon.http_port"] == (
        "environment AMOSYNC_DAEMON__HTTP_PORT",
        f"must not be 0 when webhooks.enabled is true (file {path}): the hook is served on "
        "that port",
    )


def test_a_commands_needs_are_listed_with_the_files_problems(tmp_path: Path) -> None:
    path = tmp_path / "amosync.toml"
    path.write_text('[database]\nschema = "bad-x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, needs=lambda config: auth_required(config.amocrm))
    assert [p.key for p in caught.value.problems] == ["database.schema", "amocrm.access_token"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://exa mple.amocrm.ru", "has a space at character 12"),
        ("https://example.amocrm.ru ", "has a space at the end"),
        (" https://example.amocrm.ru", "has a space at the start"),
        ("https://example.amocrm.ru\t", "has a tab at the end"),
        ("https://exa\u200bmple.amocrm.ru", "has the character U+200B at character 12"),
        ("https://exa_mple.amocrm.ru", "has host 'exa_mple.amocrm.ru', which is neither"),
        ("https://-x.amocrm.ru", "neither a host name nor an IP address"),
        ("https://a..amocrm.ru", "neither a host name nor an IP address"),
        ("https://300.1.1.1", "neither a host name nor an IP address"),
        ("https://example.amocrm.ru:99999", "port that is not a number between 0 and 65535"),
        ("https://example.amocrm.ru:x", "port that is not a number between 0 and 65535"),
        ("ftp://example.amocrm.ru", "absolute http(s) URL"),
    ],
)
def test_amocrm_urls_refused_up_front(url: str, says: str) -> None:
    message = amocrm_url(url)
    assert message is not None
    assert says in message
    assert "(a newline)" not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://example.amocrm.ru",
        "https://example.amocrm.ru/",
        "https://example.kommo.com:8443",
        "https://пример.рф",  # sent in its IDNA form
        "http://127.0.0.1:18931",
        "http://[::1]:8080",
        "http://localhost:1",
        "https://10.0.0.7",
    ],
)
def test_amocrm_urls_accepted(url: str) -> None:
    assert amocrm_url(url) is None


def test_public_url_hosts_are_checked_too() -> None:
    assert "neither a host name" in (public_url("https://sync_host.example.com") or "")
    assert "has a space at the end" in (public_url("https://sync.example.com ") or "")
    assert public_url("https://sync.example.com/base") is None


def test_a_control_character_is_named_where_it_is(tmp_path: Path) -> None:
    found = problems_of(None, {"AMOSYNC_DATABASE__SCHEMA": "crm\r"})
    assert "has a carriage return at the end" in found["database.schema"][1]
    found = problems_of(None, {"AMOSYNC_DATABASE__URL": "postgresql://u@db/x\n"})
    assert "has a newline at the end" in found["database.url"][1]
