"""Modules stay small enough to read in one sitting (issue 14: ≤ 400 lines): a module of
`sync/` that grows past the limit is split into cohesive pieces, not allowed to sprawl.
Migrations are frozen history and live outside `sync/` (top-level `migrations/`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 400

# path → why it may exceed the limit for now. The list only shrinks: an entry whose file is gone
# or back under the limit fails the test too.
ALLOWED: dict[str, str] = {}


def lines_of(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def oversized() -> dict[str, int]:
    return {
        path.relative_to(ROOT).as_posix(): n
        for path in sorted((ROOT / "sync").rglob("*.py"))
        if "__pycache__" not in path.parts and (n := lines_of(path)) > LIMIT
    }


def test_no_module_of_sync_exceeds_the_limit_but_the_listed_ones() -> None:
    over = {path: n for path, n in oversized().items() if path not in ALLOWED}
    assert not over, f"modules over {LIMIT} lines (split them): {over}"


def test_every_allowed_module_still_needs_its_entry() -> None:
    stale = sorted(set(ALLOWED) - set(oversized()))
    assert not stale, f"allowed but gone or back under {LIMIT} lines (remove them): {stale}"


def test_the_count_is_of_lines(tmp_path: Path) -> None:
    short, long = tmp_path / "short.py", tmp_path / "long.py"
    short.write_text("x = 1\n" * LIMIT, encoding="utf-8")
    long.write_text("x = 1\n" * (LIMIT + 1), encoding="utf-8")
    assert (lines_of(short), lines_of(long)) == (LIMIT, LIMIT + 1)
