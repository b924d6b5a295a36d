"""Helpers for the amo tests: clocks that record sleeps (one moves an emulator), and a scripted
MockTransport."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from sync.amo.auth import StaticToken
from sync.amo.backoff import Backoff
from sync.amo.ratelimit import RateLimiter
from sync.amo.session import AmoSession
from sync.config import AmoCrmConfig, Secret

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig-long-lived-123"


class FakeClock:
    """Time moves only when somebody sleeps; sleeps are recorded."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.moment

    def monotonic(self) -> float:
        """Real elapsed time plus everything slept: waits still end, sleeps cost nothing."""
        return time.monotonic() + sum(self.sleeps)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.moment += timedelta(seconds=seconds)


class EmulatorTime(FakeClock):
    """A client's (and a push's) clock that moves a frozen emulator's clock instead of sleeping:
    list lags and confirmation windows of seconds pass at once, and exactly."""

    def __init__(self, emulator: Any) -> None:
        super().__init__()
        self.moment = datetime.now(UTC)
        self.emulator = emulator

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if seconds > 0:
            self.emulator.clock.advance(seconds)


Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport answering from a list of responses (or exceptions), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/hal+json", **(headers or {})},
    )


def config(**kw: Any) -> AmoCrmConfig:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "access_token": Secret(TOKEN),
        "max_rps": 1000.0,
        "max_retries": 3,
        "timeout_s": 5.0,
    }
    values.update(kw)
    return AmoCrmConfig(**values)


def session(
    script: Script,
    tokens: Any = None,
    clock: FakeClock | None = None,
    limiter: RateLimiter | None = None,
    **kw: Any,
) -> AmoSession:
    cfg = config(**kw)
    clock = clock or FakeClock()
    return AmoSession(
        cfg,
        tokens if tokens is not None else StaticToken(cfg.access_token),
        limiter or RateLimiter(cfg.max_rps, margin_s=0.0, monotonic=clock.monotonic),
        clock=clock,
        backoff=Backoff(rng=random.Random(7)),
        transport=script.transport,
    )
