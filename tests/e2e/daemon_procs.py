"""The emulator and `amosync run` as real subprocesses, for the daemon's end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sync.config import DatabaseConfig
from tests.e2e.cli import AMOSYNC, clean_env

TOKEN = "e2e-daemon-token"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def http_json(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class EmulatorProcess:
    """`amosync emulator` on a fixed port (so it can be stopped and started again)."""

    def __init__(self, tmp: Path, contacts: int = 40) -> None:
        self.port = free_port()
        self.contacts = contacts
        self.log = tmp / f"emulator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [AMOSYNC, "emulator", "--port", str(self.port), "--contacts", str(self.contacts),
                "--rate-limit", "0", "--token", TOKEN, "--seed", "11"]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=clean_env()
            )
        wait_for("the emulator", self._answers, timeout=30)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError):
            return http_json(f"{self.base_url}/_emulator/state")[0] == 200
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.proc = None

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, data = http_json(f"{self.base_url}/_emulator/{path}", method, body)
        assert status < 300, (status, data)
        return data


class DaemonProcess:
    """`amosync run` with its configuration in the environment."""

    def __init__(self, tmp: Path, db: DatabaseConfig, amo_url: str, **settings: str) -> None:
        self.port = free_port()
        self.log = tmp / f"daemon-{self.port}.log"
        self.env = clean_env({
            "AMOSYNC_AMOCRM__BASE_URL": amo_url,
            "AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN,
            "AMOSYNC_AMOCRM__MAX_RPS": "100",
            "AMOSYNC_AMOCRM__TIMEOUT_S": "2",
            "AMOSYNC_AMOCRM__MAX_RETRIES": "1",
            "AMOSYNC_DATABASE__URL": db.url.reveal(),
            "AMOSYNC_DATABASE__SCHEMA": db.schema,
            "AMOSYNC_SYNC__POLL_INTERVAL_S": "1",
            "AMOSYNC_SYNC__PUSH_INTERVAL_S": "1",
            "AMOSYNC_SYNC__OVERLAP_S": "5",
            "AMOSYNC_DAEMON__HTTP_PORT": str(self.port),
            "AMOSYNC_DAEMON__REQUESTS_POLL_S": "0.5",
            "AMOSYNC_LOGGING__FORMAT": "json",
            **settings,
        })  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([AMOSYNC, "run"], stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)  # fmt: skip
        return self

    def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            return http_json(f"http://127.0.0.1:{self.port}/healthz")
        except OSError:
            return None

    def wait_health(self, status: int, role: str = "leader", timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.assert_running()
            got = self.health()
            return got[1] if got and got[0] == status and got[1]["role"] == role else None

        return wait_for(f"/healthz {status} as {role}", check, timeout)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def assert_running(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, self.output()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


def env_for(daemon: DaemonProcess) -> Mapping[str, str]:
    """The daemon's configuration, for running other `amosync` commands beside it."""
    return {k: v for k, v in daemon.env.items() if k.startswith("AMOSYNC_")}
