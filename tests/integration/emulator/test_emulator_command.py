"""`amosync emulator` as a subprocess: prints what to connect with, serves, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
from emulator_helpers import SSL


def test_command_serves_and_stops_cleanly() -> None:
    command = [
        sys.executable,
        "-m",
        "sync",
        "emulator",
        "--port",
        "0",
        "--contacts",
        "120",
        "--seed",
        "4",
        "--latency-ms",
        "5",
        "--rate-limit",
        "0",
        "--token",
        "cli-token",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        printed = {}
        for line in process.stdout:
            key, sep, value = line.strip().partition("=")
            if sep:
                printed[key] = value
            if key == "admin":
                break
        assert printed["access_token"] == "cli-token"
        assert printed["oauth_code"].startswith("def502")
        headers = {"Authorization": "Bearer cli-token"}
        with httpx.Client(verify=SSL, base_url=printed["base_url"], headers=headers) as http:
            body = http.get("/api/v4/contacts", params={"limit": 250}).json()
            assert 100 < len(body["_embedded"]["contacts"]) <= 120
            state = http.get("/_emulator/state").json()
            assert state["controls"]["latency_ms"] == 5
            assert state["controls"]["rate_limit"] is None
        process.send_signal(signal.SIGTERM)
        rest = process.stdout.read()
        assert process.wait(timeout=10) == 0
    assert "emulator stopped" in rest
