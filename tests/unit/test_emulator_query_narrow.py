"""`order[id]` with a date range that holds few contacts (a tie read by id) is served from the
date's own view: the same contacts, in the same order, as checking every contact."""

from __future__ import annotations

import random

import pytest

from sync.emulator import Emulator, EmulatorSettings
from sync.emulator.query import ContactQuery, Range, select


def _scan(account, q: ContactQuery, offset: int, limit: int) -> list[int]:
    """The page as the definition says: every contact of the id order, checked."""
    rows = [
        c
        for c in account.view("id", q.descending, q.deleted)
        if all(span.holds(getattr(c, name)) for name, span in q.ranges.items())
        and all(getattr(c, name) in set(ids) for name, ids in q.users.items())
    ]
    return [c.id for c in rows[offset : offset + limit]]


@pytest.mark.parametrize("tie_break", ["asc", "desc", "shuffle"])
def test_a_narrow_date_range_in_id_order_matches_the_full_check(tie_break) -> None:
    emulator = Emulator(EmulatorSettings(contacts=600, seed=5, clock_start=1_800_000_000,
                                         clock_frozen=True, tie_break=tie_break))  # fmt: skip
    account = emulator.account
    live = [c.id for c in account.contacts.values() if not c.is_deleted]
    rng = random.Random(2)
    emulator.touch_contacts(rng.sample(live, 120))  # 120 contacts in one second: a tie
    emulator.clock.advance(3)
    emulator.delete_contact(rng.choice(live))
    emulator.clock.advance(1)
    seconds = sorted({c.updated_at for c in account.contacts.values()})
    cases = [Range(s, s) for s in (seconds[0], seconds[len(seconds) // 2], seconds[-2])]
    cases += [Range(seconds[3], seconds[9]), Range(None, seconds[2]), Range(seconds[-3], None)]
    cases += [Range(None, None)]
    for span in cases:
        for descending in (False, True):
            for deleted in (False, True):
                for users in (
                    {},
                    {"created_by": [c.created_by for c in account.contacts.values()][:1]},
                ):
                    for offset, limit in ((0, 50), (50, 50), (0, 250)):
                        expected = _scan(
                            account,
                            ContactQuery(ranges={"updated_at": span}, users=users,
                                         order_field="id", descending=descending, deleted=deleted),
                            offset, limit,
                        )  # fmt: skip
                        q = ContactQuery(ranges={"updated_at": span}, users=dict(users),
                                         order_field="id", descending=descending,
                                         deleted=deleted)  # fmt: skip
                        got, _more = select(account, q, offset, limit)
                        assert [c.id for c in got] == expected, (span, descending, deleted, users)


def test_the_tie_second_is_not_checked_contact_by_contact(monkeypatch) -> None:
    """The narrow cut is taken: no per-contact check runs for the date range."""
    emulator = Emulator(EmulatorSettings(contacts=2000, seed=3, clock_start=1_800_000_000,
                                         clock_frozen=True))  # fmt: skip
    account = emulator.account
    second = account.view("updated_at", False, False)[1000].updated_at
    checked = []
    holds = Range.holds
    monkeypatch.setattr(
        Range, "holds", lambda self, value: checked.append(value) or holds(self, value)
    )
    q = ContactQuery(ranges={"updated_at": Range(second, second)}, order_field="id")
    got, _ = select(account, q, 0, 250)
    assert got
    assert all(c.updated_at == second for c in got)
    assert checked == []
