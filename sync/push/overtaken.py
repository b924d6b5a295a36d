"""A pull that overtook push's write: amoCRM's values of the columns push settled, read by id.

Push records a PATCH's answer in a transaction of its own, after the PATCH. A pull storing the
contact in between finds its edit still in the outbox and keeps the edited columns' local values
while it stores amoCRM's newer version (a CRM user's edit made after ours). Push then consumes
the edit: those columns held the local value at a version where amoCRM's is another, and only a
pull listing that version again (within `sync.overlap_s` of its cursor) put them right.
`sync.db.outbox.record_updates` names such contacts (the stored version is newer than the one
push's columns are known to match); each is read by id (no lag) and, when amoCRM still has the
version stored, stored again as the pull would have without the held columns
(`ContactStore.store_read_back`): a column edited again meanwhile stays held and goes with the
next push. A newer version is left to the next pull, which lists it; a transient failure of the
read leaves the row as it was before this step (`push_overtaken_unread`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sync.core.mapping import FieldDef
from sync.db.contacts import ContactStore
from sync.errors import AmoTransientError
from sync.logs import get_logger
from sync.push.context import Context, record_outcome

log = get_logger("sync.push")


def refresh_overtaken(ctx: Context, ids: Sequence[int]) -> None:
    """Read each contact by id and store amoCRM's values of the columns push settled."""
    if not ids:
        return
    with ctx.engine.connect() as conn:
        fields = ctx.runs.load_fields(conn)
    store = ContactStore(ctx.runs.schema)
    for contact_id in ids:
        try:
            item = ctx.client.fetch_contact(contact_id)
        except AmoTransientError as exc:
            log.warning("push_overtaken_unread", contact_id=contact_id, error=str(exc))
            continue
        if item is None:  # deleted since: the pull's events tell
            continue
        stored = _store(ctx, store, item, fields)
        log.info("push_overtaken_refreshed", contact_id=contact_id,
                 updated_at=item.get("updated_at"), stored=stored)  # fmt: skip


def _store(
    ctx: Context, store: ContactStore, item: Mapping[str, Any], fields: Mapping[int, FieldDef]
) -> bool:
    stored: list[bool] = []
    record_outcome(ctx, lambda conn: stored.append(store.store_read_back(conn, item, fields)))
    return stored[-1]
