"""Every command's schema check reads the head revision from the revision files' headers, without
importing alembic (`sync.db.migrate.shipped_head`): it must name alembic's own head."""

from __future__ import annotations

import subprocess
import sys

from sync.db.migrate import head_revision, shipped_head


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert shipped_head() == head_revision()


def test_the_pull_commands_wiring_does_not_import_alembic() -> None:
    code = (
        "import sys, sync.cli, sync.wiring, sync.pull\n"
        "print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
