"""The wheel's package list is complete: pyproject.toml lists the packages by hand (setuptools
cannot combine `packages.find` with the mapping that installs the top-level `migrations/` as
`sync.migrations`), so a package added under sync/ and not listed would be missing from every
wheel and image while the editable checkout kept working."""

from __future__ import annotations

import tomllib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict[str, object]:
    with (CHECKOUT / "pyproject.toml").open("rb") as f:
        table: dict[str, object] = tomllib.load(f)["tool"]["setuptools"]
        return table


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
