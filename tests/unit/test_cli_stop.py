"""`sync.cli_stop` in a child process of its own (its exits are `os._exit`): the first signal
stops the sessions it watches (or interrupts a command that has none), a second one exits at
once, and a command that does not end within the grace is ended anyway; exit status 1 always."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import sys, time
    from sync.cli_stop import CommandStop
    from sync.errors import StoppedError

    class Session:
        def stop(self, reason, *, final):
            print(f"session stopped: {reason} final={final}", flush=True)

    stop = CommandStop(grace_s=float(sys.argv[2]))
    stop.install()
    if sys.argv[1] in ("session", "lock"):
        stop.watch(Session())
    try:
        print("ready", flush=True)
        if sys.argv[1] == "lock":
            while True:
                stop.sleep(0.5)  # a wait for another process's run lock
        time.sleep(30)  # a command that goes on after the signal
    except StoppedError as exc:
        print(f"raised: {exc}", flush=True)
        sys.exit(1)
    """
)


def _child(mode: str, grace_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(grace_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("plain", ["raised: stopped by SIGTERM"]),
        (
            "lock",
            [
                "session stopped: stopped by SIGTERM final=True",
                "raised: stopped by SIGTERM while waiting for another process's run",
            ],
        ),
    ],
)
def test_a_command_with_no_session_is_interrupted_and_a_lock_wait_ends(
    mode: str, said: list[str]
) -> None:
    proc = _child(mode, 10.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1, err
    assert out.splitlines() == said


def test_the_first_signal_stops_the_sessions_and_a_second_exits_at_once() -> None:
    proc = _child("session", 10.0)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "session stopped: stopped by SIGINT final=True\n"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 3
    assert proc.returncode == 1
    assert err == "amosync: stopped by SIGTERM (a second signal): exiting at once\n"


def test_a_command_that_does_not_end_within_the_grace_is_ended() -> None:
    proc = _child("session", 0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert proc.returncode == 1
    assert err == ("amosync: stopped by SIGTERM: the command did not end within 0.5 s; exiting\n")
