"""CONTRACT.md through the real `amosync`: a bad configuration is exit 2 with every problem listed
(key, where its value came from, what is wrong) before any work starts; a usage error is exit 2
with one clear line on stderr. The cases are an audit's findings (cp1251 and BOM files, two-key
rules, a host with a space, a missing token found after the embedded PostgreSQL, click's
Usage/Try/Error block)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import DatabaseConfig

from .cli import amosync

CP1251_TAIL = "# комментарий\n".encode("cp1251")
FILE = '[amocrm]\nbase_url = "https://example.amocrm.ru"\naccess_token = "t0ken"\n'


def _only_config_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    assert "unexpected error" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("amosync: invalid configuration ("), stderr
    return lines[1:]


@pytest.mark.parametrize("chosen_by", ["--config", "AMOSYNC_CONFIG", "./amosync.toml"])
def test_a_config_file_that_is_not_utf8_is_a_configuration_problem(
    tmp_path: Path, chosen_by: str
) -> None:
    path = tmp_path / "amosync.toml"
    path.write_bytes(FILE.encode() + CP1251_TAIL)
    args, env = {
        "--config": ((f"--config={path}", "status"), {}),
        "AMOSYNC_CONFIG": (("status",), {"AMOSYNC_CONFIG": str(path)}),
        "./amosync.toml": (("status",), {}),
    }[chosen_by]
    result = amosync(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    shown = "amosync.toml" if chosen_by == "./amosync.toml" else str(path)
    offset = len(FILE) + 2  # "# " before the first Cyrillic letter
    assert _only_config_lines(result.stderr) == [
        f"  - config file ({shown}): not UTF-8: byte 0xea at line 4, column 3 (offset {offset}) "
        "cannot be decoded (saved as cp1251 or another legacy encoding?): save it as UTF-8"
    ]
    assert not (tmp_path / ".amosync").exists()


def test_a_config_file_with_a_utf8_bom_is_read(tmp_path: Path, db_config: DatabaseConfig) -> None:
    path = tmp_path / "bom.toml"
    text = f'[database]\nurl = "{db_config.url.reveal()}"\nschema = "{db_config.schema}"\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = amosync("--config", str(path), "status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"amocrm-sync status: schema {db_config.schema} at revision")


def test_two_key_problems_name_the_file_each_key_came_from(tmp_path: Path) -> None:
    path = tmp_path / "src.toml"
    path.write_text(
        '[amocrm]\nbase_url="https://x.amocrm.ru"\nmax_rps=50\naccess_token="t"\n'
        '[amocrm.oauth]\nclient_id="a"\nclient_secret="b"\nredirect_uri="https://r.example"\n',
        encoding="utf-8",
    )
    result = amosync("--config", str(path), "status", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    file = f"file {path}"
    assert _only_config_lines(result.stderr) == [
        f"  - amocrm.access_token ({file}): set either a long-lived access_token or "
        f"[amocrm.oauth], not both; also set: amocrm.oauth.client_id, "
        f"amocrm.oauth.client_secret ({file})",
        f"  - amocrm.max_rps ({file}): 50 exceeds amoCRM's limit of 7 requests/s (an IP ban "
        "follows); values above 7 are allowed only against a loopback emulator, and "
        f"amocrm.base_url ({file}) is not one",
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://exa mple.amocrm.ru", "has a space at character 12"),
        ("https://example.amocrm.ru ", "has a space at the end"),
    ],
)
def test_a_base_url_with_a_space_stops_pull_before_any_request(
    tmp_path: Path, url: str, says: str
) -> None:
    env = {"AMOSYNC_AMOCRM__BASE_URL": url, "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken"}
    result = amosync("pull", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert _only_config_lines(result.stderr) == [
        "  - amocrm.base_url (environment AMOSYNC_AMOCRM__BASE_URL): must be the account's "
        f"address without spaces or control characters, {says}"
    ]


@pytest.mark.parametrize(
    "command", [("pull",), ("push",), ("sync",), ("webhooks", "status")], ids=" ".join
)
def test_a_missing_token_is_listed_before_the_embedded_postgresql_is_looked_for(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "amosync.toml").write_text('[database]\nschema = "bad-x"\n', encoding="utf-8")
    result = amosync(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = _only_config_lines(result.stderr)
    assert lines[0].startswith("  - database.schema (file amosync.toml): must be a lower-case")
    assert (
        "  - amocrm.access_token (not set): set a long-lived token or the [amocrm.oauth] keys"
        in (lines)
    )
    assert "embedded PostgreSQL" not in result.stderr
    assert not (tmp_path / ".amosync").exists()


def test_pull_in_an_empty_directory_lists_the_missing_token(tmp_path: Path) -> None:
    result = amosync("pull", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "amosync: invalid configuration (1 problem):",
        "  - amocrm.access_token (not set): set a long-lived token or the [amocrm.oauth] keys",
    ]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("pull", "--bogus"), "no such option '--bogus' (amosync pull --help lists the options)"),
        (
            ("pull", "--ful"),
            "no such option '--ful', did you mean '--full'? (amosync pull --help lists the "
            "options)",
        ),
        (("bogus",), "no such command 'bogus' (amosync --help lists the commands)"),
        (
            ("conflicts", "resolve"),
            "missing argument 'CONFLICT_ID' (amosync conflicts resolve --help shows the usage)",
        ),
        (
            ("conflicts", "resolve", "x", "--keep", "local"),
            "invalid value for 'CONFLICT_ID': 'x' is not a valid integer (amosync conflicts "
            "resolve --help shows the usage)",
        ),
        (
            ("status", "extra"),
            "got unexpected extra argument (extra) (amosync status --help shows the usage)",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else "",
)
def test_a_usage_error_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], line: str
) -> None:
    result = amosync(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"amosync: {line}"]
    assert result.stdout == ""


def test_help_is_left_as_click_prints_it(tmp_path: Path) -> None:
    result = amosync("pull", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: amosync pull [OPTIONS]\n")
    assert "--full" in result.stdout
