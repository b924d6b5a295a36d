# ruff: noqa: RUF001 - the names are deliberately multilingual unicode
"""Seeded values of the object-valued custom fields (legal_entity, linked_entity, file), drawn
from a random stream of their own so every other seeded value stays as it was."""

from __future__ import annotations

import random
import uuid

from sync.emulator.values import object_value


def object_values(rng: random.Random) -> dict[int, list[dict[str, object]]]:
    """Values that are JSON objects, keys in amoCRM's order (`values.OBJECT_KEYS`), which
    is not jsonb's (shortest key first): on about one contact in ten each."""
    out: dict[int, list[dict[str, object]]] = {}
    if rng.random() < 0.1:
        inn = f"77{rng.randrange(10**8):08d}"
        out[570_021] = [
            {
                "value": object_value(
                    "legal_entity",
                    {
                        "name": f"ООО «Ромашка {inn[-3:]}»",
                        "entity_type": None,
                        "vat_id": inn,
                        "tax_registration_reason_code": None,
                        "address": "Москва, ул. Тверская, 1",
                        "kpp": f"{inn[:4]}01001",
                        "external_uid": None,
                    },
                )
            }
        ]
    if rng.random() < 0.1:
        out[570_022] = [
            {
                "value": object_value(
                    "linked_entity",
                    {
                        "name": f"Товар {rng.randrange(1000)}",
                        "entity_id": 1 + rng.randrange(999),
                        "entity_type": "catalog_elements",
                        "catalog_id": 5_001,
                    },
                )
            }
        ]
    if rng.random() < 0.1:
        out[570_023] = [
            {
                "value": object_value(
                    "file",
                    {
                        "file_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                        "version_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
                        "file_name": "договор.pdf",
                        "file_size": 1_024 + rng.randrange(10**6),
                        "is_deleted": False,
                    },
                )
            }
        ]
    return out
