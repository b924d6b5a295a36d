"""Database URL secrets are hidden alike on the CLI's line (`describe`, `store_errors`) and in
log lines (`redact_text`): query settings, odd URLs with an unescaped `@` in the password."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from sync.config import DatabaseConfig, Secret
from sync.db.engine import describe, store_errors
from sync.errors import StoreError
from sync.logs import redact_text
from sync.redaction import hide_url_secrets

URLS = {
    "postgresql://postgres@127.0.0.1:5999/db?password=QuerySecret123": "QuerySecret123",
    "postgresql:///db?host=127.0.0.1&password=QuerySecret123": "QuerySecret123",
    "postgresql://postgres:Pw@rd@Secret@127.0.0.1:5999/db": "rd@Secret",
    "postgresql://u:Plain@127.0.0.1/db?sslpassword=SslSecret&passfile=/tmp/pgpass": "SslSecret",
}


@pytest.mark.parametrize("url", URLS)
def test_no_secret_of_a_database_url_is_shown_or_logged(url: str) -> None:
    secret = URLS[url]
    for shown in (describe(make_url(url)), redact_text(f"connect {url} failed")):
        assert secret not in shown, shown
        assert "Pw" not in shown
        assert "Plain" not in shown
    assert "passfile" in describe(make_url(url)) or "passfile" not in url  # a path, not secret


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=db password = bare1 user=u",
        "password='se cret' host=db",
        "password=''",
        "password=bare1'cret x",
        "password=bare1\\ cret x",
        "password='se cret",  # a line cut short
        'password = "se cret" x',
    ],
)
def test_a_libpq_keyword_string_hides_its_password(conninfo: str) -> None:
    shown = hide_url_secrets(conninfo)
    assert "bare1" not in shown, shown
    assert "cret" not in shown, shown
    assert "***" in shown


def test_the_rest_of_a_line_stays() -> None:
    line = "GET https://example.amocrm.ru/api/v4/contacts?page=2 failed"
    assert hide_url_secrets(line) == line
    compact = '{"site":"https://shop.example:8443/p","email":"ann@example.com"}'
    assert hide_url_secrets(compact) == compact  # no userinfo up to someone's e-mail
    assert hide_url_secrets("postgresql://u:p@h/db") == "postgresql://***@h/db"


def test_a_failed_connection_quotes_no_part_of_the_password() -> None:
    """psycopg reads `Pw@rd@Secret@host` as host `rd@Secret@host` and names it in its error."""
    url = "postgresql://postgres:Pw@rd@Secret@127.0.0.1:1/db?connect_timeout=2"
    from sync.db.engine import create_engine

    engine = create_engine(DatabaseConfig(url=Secret(url)), pool_size=1, max_overflow=0)
    with pytest.raises(StoreError) as caught, store_errors(engine), engine.connect():
        pass
    engine.dispose()
    assert "Secret" not in str(caught.value)
    assert "Pw" not in str(caught.value)
    assert "PostgreSQL at postgresql+psycopg://***@127.0.0.1:1/db" in str(caught.value)
