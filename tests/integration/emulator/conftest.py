"""Fixtures for the emulator's contract tests: a real server thread on 127.0.0.1 and an httpx
client holding the long-lived token. The clock is frozen so timestamps are exact."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

# The tests import `emulator_helpers` from this folder; make that work under any pytest
# import mode (importlib mode does not put test folders on sys.path).
sys.path.insert(0, str(Path(__file__).parent))
from emulator_helpers import BASE_SETTINGS, SSL

from sync.emulator import Emulator, EmulatorSettings, RunningServer, serve


@pytest.fixture
def settings() -> EmulatorSettings:
    """Override in a test module to change the account."""
    return BASE_SETTINGS


@pytest.fixture
def emulator(settings: EmulatorSettings) -> Emulator:
    return Emulator(settings)


@pytest.fixture(scope="session")
def shared_server() -> Iterator[RunningServer]:
    """One server thread for the whole run; each test plugs in its own fresh emulator."""
    with serve(Emulator(BASE_SETTINGS)) as running:
        yield running


@pytest.fixture
def server(shared_server: RunningServer, emulator: Emulator) -> RunningServer:
    shared_server.httpd.emulator = emulator  # type: ignore[attr-defined]
    return shared_server


@pytest.fixture
def client(server: RunningServer, emulator: Emulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    with httpx.Client(verify=SSL, base_url=server.base_url, headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def anonymous(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(verify=SSL, base_url=server.base_url, timeout=10) as http:
        yield http


@pytest.fixture
def make_settings() -> Callable[..., EmulatorSettings]:
    return lambda **changes: replace(BASE_SETTINGS, **changes)
