"""`amosync` imports the emulator only for `amosync emulator` (and `demo`): every other command,
and `--help`, runs without loading `sync.emulator` (issue 14 item 5). Likewise rich (and
pygments), which only the progress bar needs: a command whose stderr is no terminal (cron, CI, a
service) never imports them, though structlog and httpx would if let (issue 12: start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs `python -m sync ARGS` in a fresh interpreter and reports, at exit (after click's
# SystemExit too), how many `sync.emulator`, `sync.*` and rich or pygments modules were imported.
PROBE = """
import atexit, runpy, sys
def report():
    names = list(sys.modules)
    emulator = sum(n == "sync.emulator" or n.startswith("sync.emulator.") for n in names)
    engine = sum(n.startswith("sync.") for n in names)
    rich = sum(n.split(".")[0] in ("rich", "pygments") for n in names)
    sys.stderr.write(f"\\nPROBE emulator={emulator} sync={engine} rich={rich}\\n")
atexit.register(report)
sys.argv = ["amosync", *sys.argv[1:]]
runpy.run_module("sync", run_name="__main__", alter_sys=True)
"""


def _imported(args: list[str], cwd: Path) -> tuple[int, int, str]:
    counts, output = _counts(args, cwd)
    return counts["emulator"], counts["sync"], output


def _counts(args: list[str], cwd: Path) -> tuple[dict[str, int], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMOSYNC_")}
    env |= {
        # nothing listens on port 9: each command gets as far as its first connection and fails
        "AMOSYNC_AMOCRM__BASE_URL": "http://127.0.0.1:9",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "lazy-import-test-token",
        "AMOSYNC_DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:9/nothing",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("PROBE "))
    counts = {key: int(n) for key, n in (part.split("=") for part in line.split()[1:])}
    return counts, done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["pull"], ["push"], ["sync"], ["status"], ["run", "--help"], ["db", "upgrade"]],
    ids=" ".join,
)
def test_commands_other_than_emulator_never_import_it(args: list[str], tmp_path: Path) -> None:
    emulator, engine, output = _imported(args, tmp_path)
    assert engine > 1, output  # the probe really ran the CLI
    assert emulator == 0, output


@pytest.mark.parametrize("args", [["pull"], ["push"], ["sync"], ["status"]], ids=" ".join)
def test_commands_without_a_terminal_never_import_rich(args: list[str], tmp_path: Path) -> None:
    counts, output = _counts(args, tmp_path)
    assert counts["sync"] > 1, output  # the probe really ran the CLI
    assert "amosync:" in output  # as far as its first connection (nothing listens on port 9)
    assert counts["rich"] == 0, output


def test_the_emulator_command_still_loads_and_lists_its_options(tmp_path: Path) -> None:
    emulator, _, output = _imported(["emulator", "--help"], tmp_path)
    assert emulator > 0  # the probe sees the import when it happens
    assert "--contacts" in output
    assert "--rate-limit" in output


def test_top_level_help_lists_the_emulator_command(tmp_path: Path) -> None:
    _, _, output = _imported(["--help"], tmp_path)
    assert "emulator" in output
    assert "Run the local amoCRM API v4 emulator" in output


def test_a_progress_bar_that_draws_nothing_imports_no_rich(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sync.progress import progress_bar\n"
        "with progress_bar(enabled=False) as bar:\n"
        "    bar.start(10, 'pulling'); bar.advance(3)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('rich', 'pygments')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr
