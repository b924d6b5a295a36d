"""Running the real `amosync` console script as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
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
