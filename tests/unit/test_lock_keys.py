"""Every advisory lock of the sync has its key from one scheme, `lock_key(schema, name)`, and
the leader and pull keys are still the ones earlier releases hold: during a rolling upgrade an
old and a new daemon must exclude each other as leaders (docs/operations.md, "Upgrading")."""

from __future__ import annotations

from sync.db.locks import advisory_key, leader_lock_key, lock_key
from sync.db.runs import pull_lock_key, push_lock_key
from sync.db.tokens import TOKENS_KEY

# what releases up to 07f8c48 computed (blake2b-64 of "amosync-leader:amocrm" / "-pull:")
RELEASED_LEADER_KEY = -1499490577022084669
RELEASED_PULL_KEY = -6030641655176791768


def test_the_leader_and_pull_keys_are_the_released_ones() -> None:
    assert leader_lock_key("amocrm") == RELEASED_LEADER_KEY
    assert pull_lock_key("amocrm") == RELEASED_PULL_KEY


def test_every_lock_key_comes_from_the_one_scheme() -> None:
    assert leader_lock_key("crm") == lock_key("crm", "leader") == advisory_key("amosync-leader:crm")
    assert pull_lock_key("crm") == lock_key("crm", "pull")
    assert push_lock_key("crm") == lock_key("crm", "push")


def test_locks_differ_by_name_and_by_schema() -> None:
    names = ("leader", "pull", "push", "migrate", TOKENS_KEY)
    keys = {lock_key(schema, name) for schema in ("amocrm", "crm2") for name in names}
    assert len(keys) == 10
    assert all(-(2**63) <= key < 2**63 for key in keys)  # a PostgreSQL bigint
