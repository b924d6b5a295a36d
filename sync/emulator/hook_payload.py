"""What a hook carries: amoCRM's form-encoded, PHP-style body (fact sheet §7, §16).

    contacts[update][0][id]=20000017&contacts[update][0][updated_at]=1767225600&...
    contacts[delete][0][id]=20000021&contacts[delete][0][type]=contact&
    account[id]=31000001&account[subdomain]=emulator

Every value is a string. `add`, `update`, `restore` (and `responsible`) carry a partial snapshot
of the contact as it was when it changed (the restore one "the full entity"), `delete` only the
id and type. Several entities, of several events, may share one post; each event numbers its
own entities from 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from sync.emulator.model import Contact
    from sync.emulator.store import Account

Pairs = list[tuple[str, str]]  # key suffix after `contacts[<event>][<n>]`, value


def contact_fields(change: str, contact: Contact, account: Account) -> Pairs:
    """The entity's part of a hook, captured now (the contact may change again before the post).
    Called under the account lock."""
    pairs: Pairs = [("[id]", str(contact.id)), ("[type]", "contact")]
    if change == "delete":
        return pairs
    pairs += [
        ("[name]", contact.name),
        ("[responsible_user_id]", str(contact.responsible_user_id)),
        ("[date_create]", str(contact.created_at)),
        ("[last_modified]", str(contact.updated_at)),
        ("[created_user_id]", str(contact.created_by)),
        ("[modified_user_id]", str(contact.updated_by)),
        ("[created_at]", str(contact.created_at)),
        ("[updated_at]", str(contact.updated_at)),
        ("[account_id]", str(account.settings.account_id)),
    ]
    for index, (field_id, values) in enumerate(contact.custom_fields.items()):
        base = f"[custom_fields][{index}]"
        field = account.fields.get(field_id)
        pairs += [(f"{base}[id]", str(field_id)), (f"{base}[name]", field.name if field else "")]
        if field is not None and field.code:
            pairs.append((f"{base}[code]", field.code))
        for number, value in enumerate(values):
            pairs.append((f"{base}[values][{number}][value]", _text(value.get("value"))))
            enum = value.get("enum_code") or value.get("enum_id")
            if enum is not None:
                pairs.append((f"{base}[values][{number}][enum]", str(enum)))
    for index, tag_id in enumerate(contact.tag_ids):
        tag = account.tags.get(tag_id)
        pairs += [(f"[tags][{index}][id]", str(tag_id)),
                  (f"[tags][{index}][name]", tag.name if tag else "")]  # fmt: skip
    return pairs


def form_body(entities: Sequence[tuple[str, Pairs]], account_id: int, subdomain: str) -> bytes:
    """`(change, pairs)` per entity, in order → the urlencoded body of one post."""
    numbered: dict[str, int] = {}
    fields: Pairs = []
    for change, pairs in entities:
        number = numbered.get(change, 0)
        numbered[change] = number + 1
        fields += [(f"contacts[{change}][{number}]{suffix}", value) for suffix, value in pairs]
    fields += [("account[id]", str(account_id)), ("account[subdomain]", subdomain)]
    return urlencode(fields).encode("ascii")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)
