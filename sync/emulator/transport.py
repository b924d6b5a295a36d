"""An `httpx.BaseTransport` that calls `Emulator.handle` directly: no socket, no thread.

For unit tests of HTTP clients: `httpx.Client(transport=EmulatorTransport(emulator),
base_url="http://emulator.test")`. Latency is slept, a "reset" fault raises
`httpx.ReadError`, like a dropped connection does on a real socket. Every answer carries a
`Date` by the account's clock, as the served emulator's (and amoCRM's) do: the pull reads
amoCRM's clock from it.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx

from sync.emulator.core import Emulator
from sync.emulator.wire import Request


class EmulatorTransport(httpx.BaseTransport):
    def __init__(self, emulator: Emulator, client_ip: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self.client_ip = client_ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers.raw}
        ours = Request(
            request.method, request.url.path, request.url.query.decode(), headers, body,
            self.client_ip,
        )  # fmt: skip
        response = self.emulator.handle(ours)
        if response.delay_s > 0:
            time.sleep(response.delay_s)
        if response.reset:
            raise httpx.ReadError("connection reset by the emulator", request=request)
        headers = {"Date": formatdate(self.emulator.clock.now(), usegmt=True)}
        headers.update(response.all_headers())
        return httpx.Response(
            response.status, headers=headers, content=response.body,
            request=request,
        )  # fmt: skip
