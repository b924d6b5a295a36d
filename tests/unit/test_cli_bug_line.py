"""A bug that reaches the CLI ends in one line and exit 1, its traceback a debug log event."""

from __future__ import annotations

import subprocess
import sys

BUG = """
import sync.cli
import sync.cli_context
def load_config(path, needs=None):
    raise KeyError("field_id")
sync.cli_context.load_config = load_config
sync.cli.main(["status"])
"""


def test_an_unexpected_exception_prints_one_line_and_exits_1() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BUG], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("amosync: unexpected error")
    assert "KeyError: 'field_id'" in lines[0]
    assert out.stdout == ""
