"""Running the real `amosync` console script as a subprocess."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

AMOSYNC = str(Path(sys.executable).with_name("amosync"))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without AMOSYNC_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMOSYNC_")}
    env.update(extra or {})
    return env


def amosync(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AMOSYNC, *args],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def amosync_on_a_terminal(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> tuple[int, str]:
    """Run `amosync` with stdout and stderr on a pseudo-terminal (160 columns), as a person at a
    terminal would; returns the exit code and everything the terminal received (colour and
    cursor codes included).

    COLUMNS and LINES are left out of the child's environment: they would override the
    terminal's own size (rich reads them first), and pytest-xdist's workers have them set to
    80x24, which cut the progress line short."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    child = {k: v for k, v in clean_env(env).items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [AMOSYNC, *args], stdin=slave, stdout=slave, stderr=slave, env=child, cwd=cwd
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=10), received.decode("utf-8", "replace")


def screen_lines(received: str) -> list[str]:
    """What the terminal shows, line by line: each physical line's text after its last carriage
    return or erase, colour and cursor codes removed."""
    lines = []
    for raw in received.replace("\r\n", "\n").split("\n"):
        last = max(raw.rfind("\r"), raw.rfind("\x1b[2K"))
        visible = raw[last:] if last >= 0 else raw
        lines.append(ANSI.sub("", visible).lstrip("\r"))
    return lines
