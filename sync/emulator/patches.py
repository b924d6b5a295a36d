"""A validated change to one contact: what `writes` produces and `store` applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync.emulator.model import CFValue

# A tag reference from a request: ("id", 5) or ("name", "vip").
TagRef = tuple[str, int | str]


@dataclass
class ContactPatch:
    """Only what the request named; everything absent stays as it is."""

    request_id: str
    contact_id: int | None = None  # None for a create
    scalars: dict[str, Any] = field(default_factory=dict)
    custom_fields: dict[int, list[CFValue] | None] = field(default_factory=dict)
    tags_set: list[TagRef] | None = None
    tags_cleared: bool = False  # `_embedded.tags: null`
    tags_add: list[TagRef] = field(default_factory=list)
    tags_delete: list[TagRef] = field(default_factory=list)
