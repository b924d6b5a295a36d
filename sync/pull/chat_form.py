"""What the pull remembers between processes of the server's `contact_id[]` form of
`/api/v4/contacts/chats` (`sync.amo.chats`): one `sync_state` row (`amo.chats_form`) for the
configured amoCRM base URL.

- `batched`: a batch answer listed links of two of its contacts, which proves the array form;
  a later process sends no probes (refusals and foreign or cut answers are still caught);
- `scalar`: the server was caught ignoring or losing the array form; each process asks the
  array form again, once (a fixed server is used again), and falls back at the first sign;
- `unknown` with `probes_spent`: no proof either way yet; the probes already spent count
  against `PROBES` for the origin, so they are not paid again by every process. In an
  incremental run (a pull has stored every contact before) an empty `contact_chats` means the
  account shows no link: the process then takes at most `FEW_PROBES` (probes of contacts
  without links find nothing). A full resync takes what is left of the whole budget: its empty
  table proves nothing, and it is where a lossy server must be caught.
  Probes spent while no link was known (`chats_seen` false) are forgiven once the account
  shows links: from then on a probe can catch a lossy server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from sync.amo.chats import PROBES, ChatForm
from sync.db.contacts import ContactStore
from sync.db.runs import RunStore

CHATS_FORM = "amo.chats_form"  # {"form", "base_url", "probes_spent", "chats_seen"}


@dataclass(frozen=True)
class Learnt:
    """What a run started from: the stored form, the probes spent before it, this process's
    probes when it began, and whether the account showed a link."""

    form: str
    spent_before: int
    spent_at_start: int
    chats_seen: bool


def learn(
    conn: Connection,
    runs: RunStore,
    store: ContactStore,
    base_url: str,
    form: ChatForm,
    *,
    pulled_before: bool,
) -> Learnt:
    """Read what earlier runs learnt and apply it to this process's `form` (`pulled_before`:
    an incremental run, so an empty `contact_chats` is the account's, not a new schema's)."""
    value: dict[str, Any] = runs.get_state(conn, CHATS_FORM) or {}
    ours = value.get("base_url") == base_url
    stored = str(value.get("form")) if ours else "unknown"
    chats = store.any_chat_link(conn)
    spent = _count(value.get("probes_spent")) if ours else 0
    if spent and chats and not value.get("chats_seen"):
        spent = 0  # spent where no probe could find a link; the account shows links now
    if stored == "batched":
        form.trust()
    else:
        form.allow(spent, few=pulled_before and not chats)
    return Learnt(stored, spent, form.spent, chats)


def keep(conn: Connection, runs: RunStore, base_url: str, form: ChatForm, learnt: Learnt) -> None:
    """Store what this run learnt: a form decided, or the probes it spent."""
    state = form.state
    if state == "unknown":
        spent = min(PROBES, learnt.spent_before + form.spent - learnt.spent_at_start)
        if spent == learnt.spent_before:
            return
        value = {"form": state, "base_url": base_url, "probes_spent": spent,
                 "chats_seen": learnt.chats_seen}  # fmt: skip
    elif state == learnt.form:
        return
    else:
        value = {"form": state, "base_url": base_url}
    runs.set_state(conn, CHATS_FORM, value)


def _count(raw: Any) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else 0
