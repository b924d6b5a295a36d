"""`amosync pull` as a process, timed from its start to its exit (issue 12's targets are wall
time of the command an operator runs: Python's start-up, the CLI's imports, the database
connection and the migration check are in the figure).

    wall, report, peak_mb = run_cli(config_path, ["pull", "--full"])

`write_config` writes the TOML the command reads (`amosync --config PATH`). The command runs
with this checkout first on `PYTHONPATH`, so the `amosync` script of the venv (an editable
install that may point at another checkout) imports this checkout's `sync`; `check_imports`
says which one a child process gets, and first writes that checkout's bytecode
(`compile_checkout`), which an installed amosync has. `old_walk_tree` unpacks an older commit of
the repository (`git archive`, nothing in `.git` changes) to run its pull the same way against
the same emulator.

`BENCH_STRACE=DIR` runs the command under `strace --seccomp-bpf` (network calls and the exit
only, so the process runs at about its own speed) and prints where its time went (`phases`):
spawn to the first database connect (Python and the imports), to the first amoCRM request,
the last amoCRM answer, and the exit (the database is told apart by PostgreSQL's port, 5432).
"""

from __future__ import annotations

import compileall
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
AMOSYNC = str(Path(sys.executable).with_name("amosync"))


def write_config(
    folder: Path, *, port: int, db_url: str, token: str, max_rps: float, workers: int = 8
) -> Path:
    """A config file for one benchmark run (the emulator on `port`, the database `db_url`)."""
    path = folder / "amosync.toml"
    path.write_text(
        "[amocrm]\n"
        f'base_url = "http://127.0.0.1:{port}"\n'
        f'access_token = "{token}"\n'
        f"max_rps = {max_rps}\n"
        "timeout_s = 60\n"
        "[database]\n"
        f'url = "{db_url}"\n'
        "[sync]\n"
        f"pull_workers = {workers}\n"
        "[logging]\n"
        'level = "warning"\n',
        encoding="utf-8",
    )
    return path


def child_env(checkout: Path = CHECKOUT) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    return env


def check_imports(checkout: Path = CHECKOUT) -> str:
    """Where a child process started like the command finds `sync` (its bytecode written first)."""
    compile_checkout(checkout)
    out = subprocess.run(
        [sys.executable, "-c", "import sync; print(sync.__file__)"],
        env=child_env(checkout),
        cwd="/",  # `-c` puts the working directory first on the path
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def compile_checkout(checkout: Path = CHECKOUT) -> None:
    """Write the bytecode of the checkout's `sync` (`__pycache__`, ignored by git), as pip does
    when it installs amosync. Where PYTHONDONTWRITEBYTECODE is set (this workplace) and nobody
    did, every timed command compiled the ~70 modules it imports from source: 60-70 ms of a
    pull's start-up (12 runs each, load 2-2.7) that an installed amosync never pays."""
    compileall.compile_dir(checkout / "sync", quiet=1)


def run_cli(
    config: Path, args: list[str], *, checkout: Path = CHECKOUT
) -> tuple[float, str, float]:
    """Run `amosync --config CONFIG ARGS`; (wall seconds from spawn to exit, its stdout's last
    line, its peak RSS in MB). Raises if it fails."""
    command = [AMOSYNC, "--config", str(config), *args]
    traced = os.environ.get("BENCH_STRACE")
    trace = Path(traced or ".") / f"amosync-{time.time_ns()}.strace"
    if traced:
        calls = "trace=connect,sendto,recvfrom,exit_group"
        command = ["strace", "--seccomp-bpf", "-f", "-ttt", "-e", calls, "-o", str(trace), *command]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        spawned, started = time.time(), time.monotonic()
        proc = subprocess.Popen(command, env=child_env(checkout), stdout=out, stderr=err, cwd="/")
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {stderr[-2000:]}")
    if traced:
        print(f"process phases       {phases(trace, spawned)} ({trace})")
    lines = stdout.strip().splitlines()
    return wall, lines[-1] if lines else "", usage.ru_maxrss / 1024


def phases(trace: Path, spawned: float) -> str:
    """From an strace of the command (see the module docstring): seconds after the spawn of
    its first database connect, first amoCRM request, last amoCRM answer and exit."""
    amo: set[str] = set()
    first_db = first_request = last_answer = end = float("nan")
    for line in trace.read_text(errors="replace").splitlines():
        match = re.match(r"\d+\s+([\d.]+) (\w+)\((\d*)", line)
        if not match:
            continue
        at, call, fd = float(match[1]) - spawned, match[2], match[3]
        if call == "connect" and "htons(5432)" in line and math.isnan(first_db):
            first_db = at
        elif call == "connect" and "AF_INET" in line and "htons(5432)" not in line:
            amo.add(fd)
        elif call == "sendto" and fd in amo and math.isnan(first_request):
            first_request = at
        elif call == "recvfrom" and fd in amo and "HTTP/1.1" in line:
            last_answer = at
        elif call == "exit_group":
            end = at
    return (
        f"first db connect {first_db:.3f}, first request {first_request:.3f}, "
        f"last answer {last_answer:.3f}, exit {end:.3f} s"
    )


def old_walk_tree(commit: str, into: Path) -> Path:
    """The repository at `commit`, unpacked into `into` (to run its `sync` package)."""
    archive = subprocess.run(
        ["git", "-C", str(CHECKOUT), "archive", commit, "sync"], capture_output=True, check=True
    )
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into
