"""`amosync status [--json]`: cursor, lag, last runs, pending changes, conflicts, errors, new
contacts amoCRM cannot confirm.

`gather` reads everything in one read-only transaction and returns plain JSON-ready data (the
`--json` output, stable keys); `render` turns it into lines for a person.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from sync.config import Config
from sync.core.mapping import date_text
from sync.core.models import RunKind, RunStatus
from sync.db import status as queries
from sync.db.hooks import fetch_hook_rows
from sync.db.inflight import IN_FLIGHT_KEY
from sync.db.migrate import current_revision
from sync.db.retries import retrying_key
from sync.lines import bound_line

CONTACTS_CURSOR = "pull.contacts"  # the pull's cursor key in sync_state (sync.db.runs)
INTERRUPTED = "interrupted"  # a `running` row whose lock nobody holds (not a stored status)
INTERRUPTED_WHY = "the run stopped (killed?) before it finished; the next run of its kind closes it"


def gather(conn: Connection, config: Config, now: datetime | None = None) -> dict[str, Any]:
    """The status as JSON-ready data."""
    now = now or datetime.now(UTC)
    schema = config.database.schema
    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED READ ONLY")
    success = queries.fetch_last_success(conn)
    leader = queries.fetch_leader(conn, schema)
    pulls = [run for kind, run in success.items() if kind in queries.PULL_KINDS]
    last_pull = max(pulls, key=lambda run: run.started_at) if pulls else None
    state = queries.fetch_state(conn)
    return {
        "schema": schema,
        "revision": current_revision(conn, schema),
        "generated_at": now.isoformat(),
        "daemon": _leader(leader),
        "cursor": _cursor(state),
        "lag_s": round((now - last_pull.started_at).total_seconds(), 1) if last_pull else None,
        "last_runs": _last_runs(conn, schema, state),
        "last_failures": _last_failures(conn),
        "last_success": {k: r.as_dict() for k, r in sorted(success.items())},
        "contacts": queries.count_contacts_by_status(conn),
        "pending_changes": queries.count_pending_changes(conn),
        "rejected_changes": queries.count_rejected_changes(conn),  # those below included
        "rejected_on_deleted": queries.count_rejected_changes(conn, deleted_only=True),
        "held_chat_links": 0 if config.sync.chats else queries.count_chat_links_to_push(conn),
        "pending_requests": queries.count_pending_requests(conn),
        "requests": [_request(row) for row in queries.fetch_recent_requests(conn)],
        "open_conflicts": queries.count_open_conflicts(conn),
        "errors": queries.fetch_row_errors(conn),
        "unconfirmed_creates": _unconfirmed(conn, state),
        "last_lock_wait": _lock_wait(queries.fetch_last_lock_wait(conn)),
        "webhooks": _webhooks(conn, config, now),
        "state": state,
    }


def _last_runs(conn: Connection, schema: str, state: dict[str, Any]) -> dict[str, Any]:
    """The latest run of each kind. One still `running` while no session holds its kind's lock
    was killed (kill -9, a lost host): it shows as `interrupted` (computed here; the row itself
    is closed by the next run that takes the lock). A running one says whether it is retrying
    amoCRM requests, and why (`retrying`, from `sync.db.retries`; None when not).

    The locks are not transactional, so a run that ended between the two reads would look
    killed: a run closes its row before it lets go of its lock, so the rows are read again
    (this transaction reads committed, each statement afresh) and only a run still `running`
    after its lock was seen free is called interrupted."""
    runs = queries.fetch_last_runs(conn)
    ids = {kind: run.id for kind, run in runs.items()}
    running = {kind for kind, run in runs.items() if run.status == RunStatus.RUNNING}
    held = queries.fetch_held_run_locks(conn, schema) if running else set()
    unheld = {kind for kind in running if _lock_of(kind) not in held}
    if unheld:
        runs = queries.fetch_last_runs(conn)
    data = {}
    for kind, run in sorted(runs.items()):
        row = run.as_dict()
        # the same row still running: killed. A new row started since the lock check holds
        # its lock (it took it before writing the row), and a closed one ended on its own.
        if kind in unheld and run.status == RunStatus.RUNNING and run.id == ids.get(kind):
            row.update(status=INTERRUPTED, error=row["error"] or INTERRUPTED_WHY)
        row["retrying"] = _retrying(state, kind, row)
        data[kind] = row
    return data


def _retrying(state: dict[str, Any], kind: str, run: dict[str, Any]) -> dict[str, Any] | None:
    """The running run's latest noted retry: since when, how many, the last one's time and
    reason (None: the run is not running, or has retried nothing)."""
    entry = state.get(retrying_key(kind)) or {}
    value = entry.get("value")
    if run["status"] != RunStatus.RUNNING or not isinstance(value, dict):
        return None
    if value.get("run_id") != run["id"]:
        return None  # an earlier run's, not cleared (its process was killed)
    return {"since": value.get("since"), "last_at": entry.get("updated_at"),
            "retries": value.get("retries"), "reason": value.get("reason")}  # fmt: skip


def _last_failures(conn: Connection) -> dict[str, Any]:
    """Each kind whose latest finished run failed: that run (its error and when), also while a
    newer run of the kind is still running (say retrying through an amoCRM outage)."""
    finished = queries.fetch_last_finished(conn)
    return {k: r.as_dict() for k, r in sorted(finished.items()) if r.status == RunStatus.FAILED}


def _lock_of(kind: str) -> str:
    return "push" if kind == RunKind.PUSH else "pull"


def _unconfirmed(conn: Connection, state: dict[str, Any]) -> list[dict[str, Any]]:
    """New contacts sent that amoCRM cannot confirm (push's in-flight record, rows marked
    waiting), each with when it was sent and the statement that withdraws it."""
    entry = state.get(IN_FLIGHT_KEY) or {}
    creates = (entry.get("value") or {}).get("creates") or {}
    sent = creates.get("sent") or {}
    temps = [int(t) for t in creates.get("items") or {}]
    rows = queries.fetch_waiting_creates(conn, temps) if temps else []
    return [
        {"id": row["id"], "name": row["name"], "sent_at": sent.get(str(row["id"])),
         "withdraw": f"DELETE FROM contacts WHERE id = {row['id']}"}
        for row in rows
    ]  # fmt: skip


def _webhooks(conn: Connection, config: Config, now: datetime) -> dict[str, Any]:
    """Whether hooks are on, when one last arrived, and the leader's verdict on them."""
    last, health = fetch_hook_rows(conn)
    received = last.get("received_at") if last else None
    data: dict[str, Any] = {
        "enabled": config.webhooks.enabled,
        "last_hook_at": None,
        "last_hook_age_s": None,
        "state": None,
        "reason": None,
        "since": None,
        "poll_interval_s": None,
    }
    if isinstance(received, int | float):
        data["last_hook_at"] = datetime.fromtimestamp(received, UTC).isoformat()
        data["last_hook_age_s"] = round(max(0.0, now.timestamp() - received), 1)
    if health:
        data.update({k: health.get(k) for k in ("state", "reason", "poll_interval_s")})
        since = health.get("since")
        if isinstance(since, int | float):
            data["since"] = datetime.fromtimestamp(since, UTC).isoformat()
    if data["state"] == "quiet":  # its reason is the hook's age when the leader judged: say it now
        age = data["last_hook_age_s"]
        data["reason"] = "no hook received yet" if age is None else f"no hook for {_duration(age)}"
    return data


def _request(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _lock_wait(run: queries.RunRow | None) -> dict[str, Any] | None:
    if run is None:
        return None
    at = run.finished_at or run.started_at
    return {"run_id": run.id, "kind": run.kind, "at": at.isoformat(), "error": run.error}


def _leader(leader: queries.Leader | None) -> dict[str, Any]:
    if leader is None:
        return {"running": False}
    return {
        "running": True,
        "leader": leader.application_name,
        "client_addr": leader.client_addr,
        "since": leader.since.isoformat() if leader.since else None,
    }


def _cursor(state: dict[str, Any]) -> dict[str, Any] | None:
    entry = state.get(CONTACTS_CURSOR)
    if not entry or not isinstance(entry["value"], dict):
        return None
    value = dict(entry["value"])
    seconds = value.get("updated_at")
    if isinstance(seconds, int | float):
        value["updated_at_iso"] = date_text(seconds)  # amoCRM's number if no ISO date shows it
    return value


# --- for a person ------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    lines = [f"amocrm-sync status: schema {data['schema']} at revision {data['revision']}"]
    lines.append(_row("daemon", _daemon_line(data["daemon"])))
    cursor = data["cursor"]
    cursor_text = "none yet (the first pull is a full one)"
    if cursor:
        cursor_text = f"contacts changed up to {cursor.get('updated_at_iso', cursor)}"
    lines.append(_row("cursor", cursor_text))
    lag = data["lag_s"]
    lines.append(_row("lag", "no successful pull yet" if lag is None else
                      f"{_duration(lag)} since the last successful pull began"))  # fmt: skip
    lines.extend(_runs(data["last_runs"], data["last_failures"]))
    contacts = data["contacts"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(contacts.items())) or "none"
    lines.append(_row("contacts", counts))
    lines.append(_row("pending", _pending_line(data)))
    lines.extend(_requests(data["requests"]))
    conflicts = data["open_conflicts"]
    hint = " (amosync conflicts list)" if conflicts else ""
    lines.append(_row("conflicts", f"{conflicts} open{hint}"))
    lines.append(_row("webhooks", _webhooks_line(data["webhooks"])))
    wait = data.get("last_lock_wait")
    if wait:
        lines.append(_row("lock wait", f"{wait['kind']} run {wait['run_id']} at {wait['at']}: "
                          f"{wait['error']}"))  # fmt: skip
    for waiting in data["unconfirmed_creates"]:
        lines.append(_row("unconfirmed", f"contact {waiting['id']} ({waiting['name']}) sent "
                          f"{waiting['sent_at']}, amoCRM cannot confirm it (see sync_error): "
                          f"`{waiting['withdraw']}` withdraws it"))  # fmt: skip
    for error in data["errors"]:
        lines.append(
            _row("error", f"contact {error['id']} ({error['name']}): {error['sync_error']}")
        )
    return "\n".join(lines)


def _pending_line(data: dict[str, Any]) -> str:
    """Edits held on a row in error wait for a new edit of the row; on a contact deleted in
    amoCRM a new edit is refused, so what frees them is a restore there (the pull that sees
    the contact again makes the row `pending`, and the next push sends them)."""
    on_deleted = data.get("rejected_on_deleted") or 0
    in_error = data["rejected_changes"] - on_deleted
    text = f"{data['pending_changes']} local change(s) to push"
    if in_error:
        text += f", {in_error} held on rows in error (a new edit of the row retries)"
    if on_deleted:
        text += (f", {on_deleted} held on contacts deleted in amoCRM (an edit here is refused: "
                 "restore the contact in amoCRM and they go with the next push)")  # fmt: skip
    if links := data.get("held_chat_links"):
        text += f", {links} chat link(s) held because sync.chats = false"
    return f"{text}, {data['pending_requests']} resync request(s)"


def _webhooks_line(hooks: dict[str, Any]) -> str:
    if not hooks["enabled"]:
        return "off (webhooks.enabled): polling every sync.poll_interval_s"
    age = hooks["last_hook_age_s"]
    last = "no hook received yet" if age is None else f"last hook {_duration(age)} ago"
    state = hooks["state"]
    if state is None:
        return f"on, {last}; no daemon has judged them yet"
    text = f"{state} since {hooks['since']}"
    if hooks["reason"] and state not in ("healthy", "quiet"):  # quiet: `last` says why
        text += f" ({hooks['reason']})"
    interval = hooks["poll_interval_s"]
    polling = f", polling every {_duration(interval)}" if isinstance(interval, int | float) else ""
    return f"{text}; {last}{polling}"


def _daemon_line(daemon: dict[str, Any]) -> str:
    if not daemon["running"]:
        return "not running (no process holds the leader lock)"
    where = f" from {daemon['client_addr']}" if daemon["client_addr"] else ""
    return f"running: {daemon['leader']}{where}, connected since {daemon['since']}"


def _runs(runs: dict[str, Any], failures: dict[str, Any]) -> list[str]:
    if not runs:
        return [_row("last runs", "none yet")]
    lines = []
    for index, (kind, run) in enumerate(sorted(runs.items())):
        label = "last runs" if index == 0 else ""
        text = f"{kind:<5} {run['status']:<9} started {run['started_at']}"
        text += f", read {run['fetched']}, wrote {run['upserted']}, pushed {run['pushed']}"
        if run["error"]:
            text += f", error: {run['error']}"
        failed = failures.get(kind)
        if failed is not None and failed["id"] != run["id"]:  # the run before this one failed
            text += f"; the {kind} before it failed at {failed['finished_at']}: {failed['error']}"
        lines.append(_row(label, text))
        if retrying := run.get("retrying"):
            lines.append(bound_line(_row("", f"{kind:<5} retrying amoCRM requests since "
                f"{retrying['since']} ({_retries(retrying['retries'])}, the last at "
                f"{retrying['last_at']}): {retrying['reason']}")))  # fmt: skip
    return lines


def _requests(requests: list[dict[str, Any]]) -> list[str]:
    """The latest resync requests with their outcome: a failed one says why."""
    lines = []
    for index, request in enumerate(requests):
        status = request["status"]
        text = f"#{request['id']} {request['kind']} {status}"
        if status == "pending":
            text += f", asked at {request['requested_at']}"
        elif status == "running":
            text += f" since {request['started_at']}"
        else:
            text += f" at {request['finished_at']}"
        if request["run_id"] is not None:
            text += f" (sync_runs id {request['run_id']})"
        if request["error"]:
            text += f": {request['error']}"
        lines.append(_row("requests" if index == 0 else "", text))
    return lines


def _retries(number: object) -> str:
    return "1 retry" if number == 1 else f"{number} retries"


def _row(label: str, text: str) -> str:
    return f"  {label:<10} {text}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
