"""`amosync emulator` as a subprocess: prints what to connect with, serves, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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


def test_command_takes_the_oauth_client_and_keeps_secrets_out_of_argv() -> None:
    """`--client-id`, `--redirect-uri` and the client secret (here from its environment
    variable, so `ps` never shows it) are what the token endpoint then checks."""
    secret, token = "s3cret-from-env", "tok-from-env"
    command = [sys.executable, "-m", "sync", "emulator", "--port", "0", "--contacts", "20",
               "--rate-limit", "0", "--client-id", "my-integration",
               "--redirect-uri", "https://sync.example.com/oauth"]  # fmt: skip
    env = {**os.environ, "AMOSYNC_EMULATOR_CLIENT_SECRET": secret, "AMOSYNC_EMULATOR_TOKEN": token}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        printed = {}
        for line in process.stdout:
            key, sep, value = line.strip().partition("=")
            if sep:
                printed[key] = value
            if key == "admin":
                break
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert secret.encode() not in argv
        assert token.encode() not in argv
        assert printed["oauth_client_id"] == "my-integration"
        assert printed["oauth_client_secret"] == secret
        assert printed["oauth_redirect_uri"] == "https://sync.example.com/oauth"
        assert printed["access_token"] == token
        grant = {"client_id": "my-integration", "client_secret": secret,
                 "grant_type": "authorization_code", "code": printed["oauth_code"],
                 "redirect_uri": "https://sync.example.com/oauth"}  # fmt: skip
        with httpx.Client(verify=SSL, base_url=printed["base_url"]) as http:
            wrong = http.post(
                "/oauth2/access_token", json={**grant, "client_id": "emulator-client-id"}
            )
            assert wrong.status_code in {400, 401}
            pair = http.post("/oauth2/access_token", json=grant)
            assert pair.status_code == 200, pair.text
            bearer = {"Authorization": f"Bearer {pair.json()['access_token']}"}
            assert http.get("/api/v4/account", headers=bearer).status_code == 200
        process.send_signal(signal.SIGTERM)
        process.stdout.read()
        assert process.wait(timeout=10) == 0
