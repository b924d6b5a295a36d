"""The BI views over pulled data: phones and e-mails with enum codes, contacts_flat."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.integration.pull_helpers import emulated, make_config, pull


def test_views_show_every_phone_and_email_and_the_primary_ones(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=150) as (emulator, url):
        pull(make_config(db_config, url, emulator.long_lived_token), engine, emulator)
        expected_phones: list[tuple[int, int, str, str]] = []
        for cid in sorted(emulator.account.contacts):
            data = emulator.contact(cid)
            assert data is not None
            for field in data.get("custom_fields_values") or ():
                if field["field_code"] == "PHONE" and not data.get("is_deleted"):
                    for pos, value in enumerate(field["values"]):
                        expected_phones.append((cid, pos, value["value"], value["enum_code"]))
    with engine.connect() as conn:
        phones = conn.execute(
            sa.text(
                "SELECT contact_id, position, phone, enum_code FROM amocrm.contact_phones "
                "ORDER BY contact_id, position"
            )
        ).all()
        flat = dict(
            conn.execute(
                sa.text("SELECT id, phone FROM amocrm.contacts_flat WHERE phone IS NOT NULL")
            ).all()
        )
        emails = conn.scalar(
            sa.text(
                "SELECT count(*) FROM amocrm.contact_emails "
                "WHERE email LIKE '%@%' AND enum_code IS NOT NULL"
            )
        )
        all_emails = conn.scalar(sa.text("SELECT count(*) FROM amocrm.contact_emails"))
        comments = conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid "
                "WHERE c.relname IN ('contact_phones', 'contact_emails', 'contacts_flat') "
                "AND d.objsubid = 0"
            )
        )
    assert [tuple(p) for p in phones] == expected_phones
    assert expected_phones, "the seed has phones"
    first = {cid: phone for cid, pos, phone, _ in expected_phones if pos == 0}
    assert flat == first
    assert all_emails > 0
    assert emails == all_emails
    assert comments == 3
