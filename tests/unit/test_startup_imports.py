"""The start-up of `amosync pull` (issue 12: it is part of every CLI pull's wall time). Structural
checks, not timed ones, each in a fresh interpreter:

- what `pull` imports before its first request: none of the modules it does not need (the
  schema check's alembic, the progress bar's rich and pygments, the daemon, push, the emulator,
  SQLAlchemy's ORM, the async libraries httpcore would load for httpx's AsyncClient), and
  httpx's transport with the command's imports, not on the way to the first request;
- its imports run without the cyclic collector and stay out of its later collections
  (`sync.heap.long_lived`): the collector scanned them ~160 times while they imported;
- `long_lived` itself: nested, raising, or entered with the collector off.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# `sync.cli` as the console script imports it, then what the pull command imports (the same
# block `pull` runs); prints what was imported and the collector's state.
PULL_IMPORTS = """
import gc, json, sys
runs = []
gc.callbacks.append(lambda phase, info: phase == "start" and runs.append(info["generation"]))
import sync.cli
from sync.cli_parts import amo_command_imports
with amo_command_imports():
    from sync.progress import connecting, progress_bar
    from sync.pull import run_pull
    from sync.wiring import connected
imported = sorted(sys.modules)
import httpx
httpx.HTTPTransport()  # as building the client does: httpx imports its transport then
print(json.dumps({
    "modules": imported,
    "with_transport": sorted(sys.modules),
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
    "collections": len(runs),
    "full_collections": runs.count(2),
}))
"""

# Modules `amosync pull` never needs before its first request (nor after: rich draws only on a
# terminal, see tests/unit/test_cli_lazy_emulator.py for the command itself).
NOT_FOR_PULL = (
    "alembic", "mako", "rich", "pygments", "apscheduler", "sqlalchemy.orm", "sqlalchemy.ext",
    "sync.daemon", "sync.push", "sync.emulator", "sync.demo", "sync.status", "anyio", "trio",
)  # fmt: skip


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_pull_command_imports_nothing_it_does_not_need() -> None:
    result = _run(PULL_IMPORTS)
    modules, with_transport = result["modules"], result["with_transport"]
    assert isinstance(modules, list)
    assert isinstance(with_transport, list)
    assert "sync.pull.run" in modules  # the probe really imported the pull
    assert "httpcore" in modules  # with the command's imports, not when the client is built
    unwanted = [
        m for m in with_transport if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_PULL)
    ]
    assert unwanted == []


def test_the_pull_commands_imports_stay_out_of_the_collectors_scans() -> None:
    state = _run(PULL_IMPORTS)
    assert state["enabled"] is True  # the collector runs again for the pull itself
    assert state["full_collections"] == 0
    assert isinstance(state["collections"], int)
    assert state["collections"] < 40  # ~160 with the collector on while importing
    frozen, tracked = state["frozen"], state["tracked"]
    assert isinstance(frozen, int)
    assert isinstance(tracked, int)
    assert frozen > 10 * tracked  # what the imports built is frozen, not rescanned


LONG_LIVED = """
import gc, json
from sync.heap import long_lived
states = []
with long_lived():
    states.append(gc.isenabled())
    with long_lived():
        states.append(gc.isenabled())
    states.append(gc.isenabled())  # the inner block left it off
states.append(gc.isenabled())
first = gc.get_freeze_count()
try:
    with long_lived():
        raise ValueError("boom")
except ValueError:
    pass
states.append(gc.isenabled())  # on again after a raise
gc.disable()
gc.unfreeze()
with long_lived():
    kept = [object() for _ in range(3)]
states.append(gc.isenabled())  # someone else turned it off: left off
print(json.dumps({"states": states, "frozen_after_block": first > 0,
                  "frozen_when_off_before": gc.get_freeze_count()}))
"""


def test_long_lived_restores_the_collector_and_freezes_only_what_it_paused() -> None:
    result = _run(LONG_LIVED)
    assert result["states"] == [False, False, False, True, True, False]
    assert result["frozen_after_block"] is True
    assert result["frozen_when_off_before"] == 0
