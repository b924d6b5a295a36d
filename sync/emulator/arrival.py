"""When a request reached the served emulator: the kernel's receive time of its bytes, not the
moment a handler thread got round to parsing it.

amoCRM counts a request against its 7 requests/s when it arrives. The emulator's handler
threads share the GIL with whatever else its process does (rendering a 250-contact page, a
test's own work) and its process shares the CPU with everything on the host: on a loaded host a
thread parsed a request up to 165 ms after its bytes came in, then the next two without delay,
so requests that arrived 1.06 s apart were counted 1.00 s apart (measured beside the two-process
budget test, `tests/e2e/test_shared_budget.py`). A real gateway's counter does not stall like
that. So each connection's socket asks the kernel to stamp what it receives (`SO_TIMESTAMPNS`,
Linux), and the request's arrival is the stamp of the read that brought in its request line.
Where the kernel gives no stamp (another OS, or the option refused) the arrival is when that read
returned, which still leaves out parsing the headers.
"""

from __future__ import annotations

import io
import platform
import socket
import struct
import sys
import time

# `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) in asm-generic/socket.h; Python does not name it. Other
# architectures (alpha, mips, parisc, sparc) number it differently: there, no stamps.
SO_TIMESTAMPNS = 35
_MACHINES = {"x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "armv7l", "riscv64", "ppc64le"}
_TIMESPEC = struct.Struct("@ll")  # struct timespec: seconds, nanoseconds
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_PLAUSIBLE_S = 60.0  # a stamp further than this from now is not trusted (a stepped clock)


def stamps_supported() -> bool:
    return sys.platform == "linux" and platform.machine().lower() in _MACHINES and _ANCILLARY > 0


def stamp_arrivals(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what `sock` receives (set on a listening socket, its accepted
    connections inherit it from their first byte on). False when it cannot."""
    if not stamps_supported():
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class ArrivalReader(io.RawIOBase):
    """A connected socket as a raw stream (wrap it in `io.BufferedReader`) that keeps when its
    latest bytes arrived: `last`, wall-clock seconds (the kernel's stamp when it gives one)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._stamped = stamp_arrivals(sock)
        self.last: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._stamped:
            count = self._sock.recv_into(buffer)
            if count:
                self.last = time.time()
            return count
        count, ancillary, _, _ = self._sock.recvmsg_into([buffer], _ANCILLARY)
        if count:
            self.last = _stamp(ancillary)
        return count


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    now = time.time()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            stamp = float(seconds) + float(nanoseconds) / 1e9
            if abs(now - stamp) <= _PLAUSIBLE_S:
                return min(stamp, now)
    return now
