"""A local amoCRM API v4 stand-in (contacts, events, custom fields, account, chats, OAuth).

See README.md in this folder for the public API, the admin endpoints and the fault catalogue.
"""

from __future__ import annotations

from sync.emulator.clock import EmulatorClock
from sync.emulator.controls import Controls
from sync.emulator.core import Emulator
from sync.emulator.faults import FaultRule
from sync.emulator.requestlog import busiest_window
from sync.emulator.server import RunningServer, serve
from sync.emulator.settings import EmulatorSettings
from sync.emulator.transport import EmulatorTransport
from sync.emulator.wire import Request, Response

__all__ = [
    "Controls",
    "Emulator",
    "EmulatorClock",
    "EmulatorSettings",
    "EmulatorTransport",
    "FaultRule",
    "Request",
    "Response",
    "RunningServer",
    "busiest_window",
    "serve",
]
