"""`AmoClient` reads against answers the vendor documents allow but our emulator does not give."""

from __future__ import annotations

import httpx
import pytest

from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.errors import AmoError
from tests.unit.amo_helpers import FakeClock, Script, config, reply

NOT_FOUND = {"title": "Not Found", "type": "https://httpstatus.es/404", "status": 404}


def client_for(*answers: httpx.Response) -> AmoClient:
    client = AmoClient(
        config(), None, transport=Script(*answers).transport, limiter=RateLimiter(1000)
    )
    client.session.clock = FakeClock()
    return client


@pytest.mark.parametrize(
    "answer",
    [
        reply(204),
        reply(404, NOT_FOUND, {"content-type": "application/problem+json"}),
        reply(404, b"<html><body>404 Not Found</body></html>", {"content-type": "text/html"}),
    ],
    ids=["204", "404-problem-json", "404-html"],
)
def test_a_contact_amocrm_does_not_have_is_none(answer: httpx.Response) -> None:
    """The reference documents 204; a 404 must mean the same, not fail a pull or a push."""
    assert client_for(answer).fetch_contact(5) is None


def test_other_refusals_of_a_contact_still_raise() -> None:
    with pytest.raises(AmoError) as caught:
        client_for(reply(403, {"title": "Forbidden", "status": 403})).fetch_contact(5)
    assert caught.value.status == 403


def test_a_found_contact_is_returned() -> None:
    assert client_for(reply(200, {"id": 5, "name": "A"})).fetch_contact(5) == {
        "id": 5,
        "name": "A",
    }
