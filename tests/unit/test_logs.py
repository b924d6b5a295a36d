"""Logging: JSON lines off a terminal, and no secret in any rendered line."""

from __future__ import annotations

import io
import json

import structlog
from hypothesis import given
from hypothesis import strategies as st

from sync.config import LoggingConfig, Secret
from sync.logs import REDACTED, configure_logging, get_logger, redact, redact_text

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.abcDEF123_-"


def test_secret_keys_are_redacted_at_any_depth() -> None:
    event = {
        "event": "request_sent",
        "access_token": TOKEN,
        "headers": {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        "oauth": [{"refresh_token": "r1", "client_secret": Secret("s")}],
        "empty_token": "",
        "count": 3,
    }
    out = redact(None, "info", dict(event))
    assert out["access_token"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert out["oauth"] == [{"refresh_token": REDACTED, "client_secret": REDACTED}]
    assert out["empty_token"] == ""
    assert out["count"] == 3


def test_secrets_inside_free_text_are_masked() -> None:
    text = (
        f"GET https://a.amocrm.ru/x?access_token={TOKEN}&page=2 failed; "
        f"header Authorization: Bearer {TOKEN}; db postgresql://user:hunter2@db:5432/crm"
    )
    masked = redact_text(text)
    assert TOKEN not in masked
    assert "hunter2" not in masked
    assert "page=2" in masked
    assert "postgresql://***@db:5432/crm" in masked  # the user too (sync.redaction)


@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-~+/", min_size=8
    )
)
def test_any_bearer_token_is_masked(token: str) -> None:
    # the whole token goes (a `not in` check passed trivially for a token like "Authoriz")
    assert redact_text(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="info", format="auto"), stream)
    log = get_logger("test")
    log.debug("hidden_event")
    log.info("token_refreshed", access_token=TOKEN, detail=f"Bearer {TOKEN}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "token_refreshed"
    assert record["level"] == "info"
    assert record["access_token"] == REDACTED
    assert TOKEN not in lines[0]
    structlog.reset_defaults()


def test_console_format_is_forced_on_request() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="debug", format="console"), stream)
    get_logger().debug("pull_page_stored", rows=250)
    output = stream.getvalue()
    assert "pull_page_stored" in output
    assert "rows=250" in output
    assert not output.lstrip().startswith("{")
    structlog.reset_defaults()


SQLALCHEMY_TEXT = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "k"\n'
    "DETAIL:  Key (email)=(ann@example.com) already exists.\n"
    "[SQL: INSERT INTO amocrm.contacts (name, email) VALUES (%(name)s, %(email)s)]\n"
    "[parameters: {'name': 'Ann', 'email': 'ann@example.com', 'phone': '+7 900 123-45-67'}]\n"
    "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
)


def test_sql_and_its_parameters_never_reach_a_log_line() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="info", format="json"), stream)
    log = get_logger("test")
    try:
        raise RuntimeError(SQLALCHEMY_TEXT)
    except RuntimeError as exc:
        log.error("push_failed", error=str(exc), nested={"why": [SQLALCHEMY_TEXT]}, exc_info=exc)
    structlog.reset_defaults()
    line = stream.getvalue()
    record = json.loads(line)
    assert record["error"] == (
        '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "k"\n'
        "[SQL removed]"
    )
    for leak in ("[SQL:", "[parameters:", "DETAIL", "ann@example.com", "123-45-67", "INSERT"):
        assert leak not in line
    assert "Traceback" in record["exception"]  # a bug's traceback stays, without the values
