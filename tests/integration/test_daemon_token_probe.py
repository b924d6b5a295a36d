"""A daemon tries a long-lived token amoCRM refused once more, before a later job (emulator)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from sync.amo.client import AmoClient
from sync.amo.gate import TokenGate
from sync.daemon.token_probe import probing
from sync.emulator import Emulator
from sync.emulator.faults import FaultRule
from sync.errors import AmoAuthError
from tests.integration.amo_emulator import client_for, running

ACCOUNT = "/api/v4/account"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env() -> Iterator[tuple[Emulator, AmoClient, Clock]]:
    with running() as (emulator, base_url):
        client = client_for(emulator, base_url)
        clock = Clock()
        client.session.gate = TokenGate(monotonic=clock)
        try:
            yield emulator, client, clock
        finally:
            client.close()


def _sent(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests() if r["path"] == ACCOUNT)


def test_a_refused_long_lived_token_is_probed_after_a_back_off_and_recovers(
    env: tuple[Emulator, AmoClient, Clock],
) -> None:
    emulator, client, clock = env
    job = probing(client.session, client.fetch_account)
    emulator.add_fault(FaultRule(kind="unauthorized", path=ACCOUNT, times=2))
    with pytest.raises(AmoAuthError):
        job()  # refused: the token is known dead
    assert _sent(emulator) == 1
    clock.now += 5  # within the back-off: the job fails without sending the dead token
    with pytest.raises(AmoAuthError):
        job()
    assert _sent(emulator) == 1
    clock.now += 5  # 10 s after the refusal: one probe, refused again
    with capture_logs() as logs, pytest.raises(AmoAuthError):
        job()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["amo_token_retry"]
    assert _sent(emulator) == 2
    clock.now += 10  # the back-off doubled: not yet
    with pytest.raises(AmoAuthError):
        job()
    assert _sent(emulator) == 2
    clock.now += 10  # 20 s after the second refusal: amoCRM accepts the token again
    assert job()["id"]
    assert _sent(emulator) == 3
    assert job()["id"]  # and it stays accepted


def test_a_probe_accepted_starts_the_back_off_over(env: tuple[Emulator, AmoClient, Clock]) -> None:
    emulator, client, clock = env
    job = probing(client.session, client.fetch_account)
    for _ in range(2):  # refused, probed 10 s later and accepted; refused again: 10 s again
        emulator.add_fault(FaultRule(kind="unauthorized", path=ACCOUNT, times=1))
        with pytest.raises(AmoAuthError):
            job()
        clock.now += 10
        assert job()["id"]
