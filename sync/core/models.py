"""The domain's names, shared by the database layer and the use cases. Pure: no I/O.

Every status the tables hold is an enum here (`StrEnum`: each member *is* its string, so it
goes into SQL parameters, JSON and comparisons with what the database returns unchanged). The
values are the public contract (CONTRACT.md, "Database") and the tables' CHECK constraints:
renaming one is a migration and a contract change, never a refactor.

`WRITABLE_FIELDS` is the one list of the contact columns a person may edit and push sends; the
capture triggers, the mapping of amoCRM's JSON, the three-way merge and the outbox all use it.
"""

from __future__ import annotations

from enum import StrEnum

# The contact columns amoCRM accepts from us, in the order the triggers and the API list them.
CF_COLUMN = "custom_fields_values"
SCALAR_FIELDS = ("name", "first_name", "last_name", "responsible_user_id")
WRITABLE_FIELDS = (*SCALAR_FIELDS, CF_COLUMN)


class ContactStatus(StrEnum):
    """`contacts.sync_status`."""

    SYNCED = "synced"  # nothing left to push
    PENDING = "pending"  # a local edit waits for push
    CONFLICT = "conflict"  # a field waits for a person (`sync_conflicts.winner`)
    ERROR = "error"  # amoCRM rejected the row; `sync_error` says why


# `sync_error` of an edit push could not send because amoCRM had no such contact: a pull that
# brings the contact back (restored there) makes the edit `pending` again
NOT_FOUND = "the contact was not found in amoCRM (deleted there, or not visible to this token)"


class RunStatus(StrEnum):
    """`sync_runs.status`."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunKind(StrEnum):
    """`sync_runs.kind`."""

    PULL = "pull"  # incremental
    FULL = "full"  # full resync
    PUSH = "push"


PULL_KINDS = (RunKind.PULL, RunKind.FULL)


class RequestStatus(StrEnum):
    """`sync_requests.status`."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED_REQUEST = (RequestStatus.DONE, RequestStatus.FAILED)


class RequestKind(StrEnum):
    """`sync_requests.kind`."""

    FULL = "full"


class ChangeKind(StrEnum):
    """`sync_changes.kind`: what a captured local write asks push to do."""

    UPDATE = "update"  # an edit of a contact amoCRM knows
    CREATE = "create"  # a contact inserted locally (negative temporary id)
    CHAT_LINK = "chat_link"  # a chat linked locally


class Winner(StrEnum):
    """`sync_conflicts.winner` (NULL while a conflict waits for a person)."""

    LOCAL = "local"
    REMOTE = "remote"
