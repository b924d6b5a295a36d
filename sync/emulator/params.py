"""PHP-style query strings, the way amoCRM reads them.

`filter[id][]=1&filter[id][]=2`, `filter[id][0]=1` and `filter[id]=1` all mean "id in ...";
a plain repeated key (`a=1&a=2`) keeps only the last value, as PHP does.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_BRACKETS = re.compile(r"\[([^\]]*)\]")

# A nested query: leaves are strings, branches are dicts (list items get auto keys).
Query = dict[str, Any]


def parse_query(query_string: str) -> Query:
    """Nest `a[b][]=c` pairs into dicts; `[]` appends under a fresh numeric key."""
    root: Query = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        path = _split_key(key)
        if path:
            _insert(root, path, value)
    return root


def _split_key(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not head:
        return []
    if not bracket:
        return [head]
    return [head, *_BRACKETS.findall(key[len(head) :])]


def _insert(node: Query, path: list[str], value: str) -> None:
    for part in path[:-1]:
        key = part if part else str(len(node))
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    last = path[-1] if path[-1] else str(len(node))
    node[last] = value


def values_of(node: object) -> list[str]:
    """A scalar or a list-shaped branch as a flat list of strings."""
    if node is None:
        return []
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [leaf for child in node.values() for leaf in values_of(child)]
    return []


def comma_values(node: object) -> list[str]:
    """Like `values_of`, also splitting comma lists (`filter[type]=a,b`, `with=a,b`)."""
    return [part.strip() for value in values_of(node) for part in value.split(",") if part.strip()]


def ints_of(node: object) -> list[int] | None:
    """Integer values, or None when any value is not an integer."""
    result = []
    for value in comma_values(node):
        try:
            result.append(int(value))
        except ValueError:
            return None
    return result


def int_param(query: Query, name: str, default: int) -> int | None:
    """A scalar integer parameter; None when present but not an integer."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        return None
    try:
        return int(raw)
    except ValueError:
        return None
