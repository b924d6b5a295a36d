"""The layer rules of README "Architecture", kept by reading every import of `sync/` and
`migrations/` (ast, nothing imported or run):

- SQL stays in `sync/db` (and the migrations): nobody else imports SQLAlchemy, psycopg or alembic.
  Handles are fine — `sqlalchemy.engine` (`Engine`, `Connection`) passes through the layers
  above, and they write no SQL with it without `sqlalchemy` itself;
- HTTP stays in `sync/amo` (and the emulator, which is an HTTP server and client of its own);
  serving HTTP (`http.server` for /healthz, /metrics, webhooks) is not a client and is allowed;
- the engine never imports the emulator (only `cli*` and `demo` start it), and the emulator
  imports nothing from the engine;
- `sync/amo` and `sync/db` are siblings below the use cases: neither imports the other, nor
  anything above them (only the ground floor and pure modules);
- the ground floor (config with its loading and checks, errors, clock, lines, redaction, logs)
  imports nothing above it;
- `sync/core` (the pure pieces both sides and `sync/db` share) is the lowest floor of the engine:
  it imports nothing from `sync` outside itself;
- the daemon (`sync/daemon`) composes pull and push: they never import it, and it imports
  nothing of the CLI above it (`cli*`, `demo`);
- a module whose docstring's first paragraph says it is pure imports no I/O, not even through
  another module of `sync` (the whole chain of imports is followed);
- a migration imports nothing from `sync`: it is frozen history (see README "Migrations").

Where today's code breaks a rule, the exception is listed below with its reason. The list only
shrinks: an entry that no longer matches anything fails the test too. Paths are matched as
patterns (`*` crosses directories), so a module that moves into a package keeps its entry.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SQL = ("sqlalchemy", "psycopg", "psycopg2", "psycopg_pool", "asyncpg", "alembic")
SQL_HANDLES = ("sqlalchemy.engine",)
HTTP_CLIENTS = ("httpx", "requests", "urllib3", "aiohttp", "urllib.request", "http.client")
# what a pure module may not reach: the network, the database, processes, threads, files, logs
IO = (
    *SQL,
    *HTTP_CLIENTS,
    "http",
    "socket",
    "socketserver",
    "ssl",
    "selectors",
    "subprocess",
    "multiprocessing",
    "threading",
    "concurrent",
    "asyncio",
    "signal",
    "os",
    "shutil",
    "tempfile",
    "pathlib",
    "io",
    "logging",
    "structlog",
    "prometheus_client",
    "apscheduler",
)
GROUND_FLOOR = (
    "sync.config",
    "sync.config_load",
    "sync.config_checks",
    "sync.config_urls",
    "sync.errors",
    "sync.clock",
    "sync.lines",
    "sync.redaction",
)
GROUND_FLOOR_WITH_LOGS = (*GROUND_FLOOR, "sync.logs")
STARTS_THE_EMULATOR = ("sync/cli*.py", "sync/demo.py", "sync/emulator/*")
ABOVE_THE_DAEMON = ("sync.cli", "sync.cli_ops", "sync.cli_webhooks", "sync.demo")

# (path pattern, imported module, rule) → why it is allowed for now
EXCEPTIONS = {
    ("sync/cli.py", "sqlalchemy.exc", "sql"): (
        "the last net: a database failure no command wrapped still becomes one line, no SQL"
    ),
    ("sync/daemon/schedule.py", "sqlalchemy.exc", "sql"): (
        "the job wrapper keeps a failing job (a driver error that escaped sync.db) from "
        "killing the scheduler"
    ),
    ("sync/daemon/leader.py", "sqlalchemy.exc", "sql"): (
        "the daemon's loop outlives a lost database connection (standby, lock, listen)"
    ),
    ("sync/daemon/metrics.py", "sqlalchemy.exc", "sql"): (
        "a scrape answers even when the database cannot"
    ),
    ("sync/pull/sink.py", "sqlalchemy.exc", "sql"): (
        "a page whose transaction met a deadlock or serialization failure is written again"
    ),
    ("sync/amo/responses.py", "httpx", "pure"): (
        "classifies httpx's exception types (isinstance only); sends nothing"
    ),
    ("sync/amo/responses.py", "socket", "pure"): "classifies socket.gaierror; opens nothing",
    ("sync/amo/responses.py", "ssl", "pure"): "classifies TLS errors; opens nothing",
    ("sync/amo/responses.py", "sync.logs", "pure"): (
        "uses the log redaction's pure string function, which lives with the log setup"
    ),
    ("sync/emulator/render.py", "sync.emulator.store", "pure"): (
        "renders the account its caller holds locked (the store's lock is what it reaches)"
    ),
}


@dataclass(frozen=True)
class Import:
    path: str  # relative to the checkout: sync/db/outbox.py
    line: int
    module: str  # absolute, dotted


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    rule: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}: {self.why}"


def sources() -> list[Path]:
    return sorted(
        p
        for tree in ("sync", "migrations")
        for p in (ROOT / tree).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_of(path: str) -> str:
    """The dotted name a file is imported as (migrations are installed as sync.migrations)."""
    parts = path.removesuffix(".py").split("/")
    if parts[0] == "migrations":
        parts = ["sync", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def imports_of(path: str) -> tuple[Import, ...]:
    return parse_imports(path, (ROOT / path).read_text(encoding="utf-8"))


def parse_imports(path: str, source: str) -> tuple[Import, ...]:
    """Every import of a file, at any depth (a lazy import inside a function counts too)."""
    tree = ast.parse(source, path)
    package = module_of(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append(Import(path, node.lineno, module))
            # `from sync.db import outbox` imports the module sync.db.outbox
            found += [
                Import(path, node.lineno, f"{module}.{alias.name}")
                for alias in node.names
                if _is_sync_module(f"{module}.{alias.name}")
            ]
    return tuple(found)


def _is_sync_module(module: str) -> bool:
    return _file_of(module) is not None


@cache
def _file_of(module: str) -> str | None:
    if not module.startswith("sync"):
        return None
    parts = module.split(".")
    bases = [ROOT / "migrations" / Path(*parts[2:])] if parts[1:2] == ["migrations"] else []
    bases.append(ROOT / Path(*parts))
    for base in bases:
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return relative(candidate)
    return None


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@cache
def is_pure(path: str) -> bool:
    return says_pure((ROOT / path).read_text(encoding="utf-8"))


def says_pure(source: str) -> bool:
    """The docstring's first paragraph says so ("Pure: no I/O", "pure functions")."""
    tree = ast.parse(source)
    summary = (ast.get_docstring(tree) or "").split("\n\n")[0]
    return re.search(r"\bpure\b", summary, re.IGNORECASE) is not None


def reachable_io(path: str, imports: tuple[Import, ...]) -> Iterator[tuple[Import, str]]:
    """(the file's own import, the I/O module it leads to) for every chain of imports through
    `sync` that ends in I/O."""
    for imp in imports:
        if within(imp.module, IO):
            yield imp, imp.module
        else:
            target = _file_of(imp.module)
            if target is not None and target != path:
                for reached in sorted(_io_closure(target)):
                    yield imp, reached


@cache
def _io_closure(path: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
    found: set[str] = set()
    for imp in imports_of(path):
        if within(imp.module, IO):
            found.add(imp.module)
        target = _file_of(imp.module)
        if target is not None and target != path and target not in seen:
            found |= _io_closure(target, seen | {path})
    return frozenset(found)


def violations() -> list[Violation]:
    return [
        v
        for file in sources()
        for v in file_violations(relative(file), file.read_text(encoding="utf-8"))
    ]


def file_violations(path: str, source: str) -> list[Violation]:
    """What breaks a rule in `source`, as the file at `path` (its imports of other modules of
    `sync` are followed into the checkout's files)."""
    imports = parse_imports(path, source)
    found = [v for imp in imports for v in _import_rules(path, imp)]
    if path.startswith("sync/") and says_pure(source):
        reached: dict[Import, list[str]] = {}
        for imp, io in reachable_io(path, imports):
            reached.setdefault(imp, []).append(io)
        for imp, ios in reached.items():
            via = "" if ios == [imp.module] else f" (it reaches {', '.join(sorted(set(ios)))})"
            why = f"the module is documented as pure and this is I/O{via}"
            found.append(Violation(path, imp.line, imp.module, "pure", why))
    return found


def _import_rules(path: str, imp: Import) -> list[Violation]:
    module = imp.module

    def broken(rule: str, why: str) -> list[Violation]:
        return [Violation(path, imp.line, module, rule, why)]

    in_db = path.startswith(("sync/db/", "migrations/"))
    if within(module, SQL) and not in_db and not within(module, SQL_HANDLES):
        return broken("sql", "SQL belongs in sync/db")
    if within(module, HTTP_CLIENTS) and not path.startswith(("sync/amo/", "sync/emulator/")):
        return broken("http", "HTTP belongs in sync/amo")
    if within(module, ("sync.emulator",)) and not any(
        fnmatch(path, p) for p in STARTS_THE_EMULATOR
    ):
        return broken("emulator", "the engine never imports the emulator")
    if (
        path.startswith("sync/emulator/")
        and module.startswith("sync")
        and not within(module, ("sync.emulator",))
    ):
        return broken("emulator", "the emulator imports nothing from the engine")
    if path.startswith("migrations/") and module.startswith("sync"):
        return broken("frozen", "a migration imports nothing from the product")
    for layer, sibling in (("amo", "db"), ("db", "amo")):
        if path.startswith(f"sync/{layer}/") and module.startswith("sync"):
            allowed = within(module, (f"sync.{layer}", *GROUND_FLOOR_WITH_LOGS))
            target = _file_of(module)
            if not allowed and not (target is not None and is_pure(target)):
                why = f"sync/{layer} is below the use cases and beside sync/{sibling}"
                return broken("layer", why)
    if (
        path.startswith("sync/core/")
        and module.startswith("sync")
        and not within(module, ("sync.core",))
    ):
        return broken("layer", "sync/core is below sync/db and sync/amo: it imports only itself")
    if path.startswith(("sync/pull/", "sync/push/")) and within(module, ("sync.daemon",)):
        return broken("layer", "the daemon composes pull and push: they never import it")
    if path.startswith("sync/daemon/") and within(module, ABOVE_THE_DAEMON):
        return broken("layer", "the CLI is above the daemon: the daemon never imports it")
    in_ground_floor = module_of(path) in GROUND_FLOOR_WITH_LOGS
    if in_ground_floor and module.startswith("sync") and not within(module, GROUND_FLOOR_WITH_LOGS):
        return broken("layer", "the ground floor imports nothing above it")
    return []


def _excused(v: Violation) -> tuple[str, str, str] | None:
    for key in EXCEPTIONS:
        pattern, module, rule = key
        if rule == v.rule and fnmatch(v.path, pattern) and within(v.module, (module,)):
            return key
    return None


def test_every_layer_rule_holds_but_the_listed_exceptions() -> None:
    found = violations()
    unexcused = [str(v) for v in found if _excused(v) is None]
    assert not unexcused, "layer rules broken:\n" + "\n".join(unexcused)


def test_every_listed_exception_is_still_needed() -> None:
    used = {_excused(v) for v in violations()}
    stale = [f"{key}: {why}" for key, why in EXCEPTIONS.items() if key not in used]
    assert not stale, "exceptions nothing needs any more (remove them):\n" + "\n".join(stale)


# --- the rules catch what they are for -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("sync/status.py", "import sqlalchemy as sa\n", "sql"),
        ("sync/pull/scan.py", "from sqlalchemy import text\n", "sql"),
        ("sync/daemon/webhooks/pull.py", "import psycopg\n", "sql"),
        ("sync/push/run.py", "import httpx\n", "http"),
        ("sync/daemon/health.py", "from urllib.request import urlopen\n", "http"),
        ("sync/daemon/run.py", "from sync.emulator import Emulator\n", "emulator"),
        ("sync/pull/run.py", "def f():\n    from sync import emulator\n", "emulator"),
        ("sync/emulator/store.py", "from sync.config import Config\n", "emulator"),
        ("sync/emulator/store.py", "from ..mapping import to_row\n", "emulator"),
        ("migrations/versions/0009_next.py", "from sync.db import capture\n", "frozen"),
        ("sync/amo/client.py", "from sync.db.outbox import claim_updates\n", "layer"),
        ("sync/db/outbox.py", "from sync.push import run_push\n", "layer"),
        ("sync/db/runs.py", "from sync.amo import client\n", "layer"),
        ("sync/errors.py", "from sync.db.engine import create_engine\n", "layer"),
        ("sync/core/items.py", "from sync.push.conflicts import resolve\n", "layer"),
        ("sync/core/models.py", "from sync.config import Config\n", "layer"),
        ("sync/pull/run.py", "from sync.daemon.webhooks.hints import Hint\n", "layer"),
        ("sync/push/updates.py", "from ..daemon import health\n", "layer"),
        ("sync/daemon/leader.py", "from sync.cli_ops import ops\n", "layer"),
        ("sync/daemon/webhooks/subscription.py", "from sync import cli\n", "layer"),
        ("sync/core/mapping.py", '"""Pure: no I/O."""\nimport threading\n', "pure"),
        ("sync/core/mapping.py", '"""Pure: no I/O."""\nimport os.path\n', "pure"),
        # through another module: outbox imports sqlalchemy
        ("sync/core/values.py", '"""Pure."""\nfrom sync.db.outbox import Change\n', "pure"),
        ("sync/core/values.py", '"""Pure functions."""\nfrom ..db import outbox\n', "pure"),
    ],
)
def test_each_rule_catches_its_mistake(path: str, source: str, rule: str) -> None:
    assert rule in {v.rule for v in file_violations(path, source)}


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("sync/status.py", "from sqlalchemy.engine import Connection, Engine\n"),
        ("sync/db/contacts.py", "import sqlalchemy as sa\n"),
        ("migrations/versions/0009_next.py", "import sqlalchemy as sa\nfrom alembic import op\n"),
        ("sync/amo/session.py", "import httpx\n"),
        ("sync/cli_ops.py", "from sync.emulator import Emulator\n"),
        (
            "sync/daemon/run.py",
            "from sync.pull import run_pull\nfrom sync.wiring import amo_client\n",
        ),
        ("sync/cli_ops.py", "from sync.daemon.run import run_daemon\n"),
        ("sync/db/outbox.py", "from sync.core.items import Conflict\n"),
        ("sync/core/items.py", "from sync.core.models import Winner\n"),
        ("sync/core/mapping.py", '"""Pure: no I/O."""\nfrom sync.core.values import same\n'),
        ("sync/status.py", '"""Read-only queries."""\nimport threading\n'),
    ],
)
def test_what_the_rules_allow(path: str, source: str) -> None:
    assert file_violations(path, source) == []
