"""`contact_catalog_elements` holds each linked element's list, quantity and metadata as amoCRM
sends them: the reference lists `quantity` and `catalog_id` on the element itself, beside
`metadata` (issue 14 item 7), and the pull reads them there."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.integration.pull_helpers import emulated, make_config, pull

CATALOG_SQL = """
    SELECT contact_id, catalog_id, element_id, quantity, metadata
    FROM amocrm.contact_catalog_elements ORDER BY 1, 2, 3"""


def test_a_pull_stores_every_catalog_element_with_its_list_and_quantity(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=250) as (emulator, url):
        pull(make_config(db_config, url, emulator.long_lived_token), engine, emulator, full=True)
        sent = sorted(
            (c["id"], e["catalog_id"], e["id"], e["quantity"], e["metadata"])
            for c in emulator.contacts(deleted=False)
            for e in c["_embedded"]["catalog_elements"]
        )
    with engine.connect() as conn:
        stored = [tuple(row) for row in conn.execute(sa.text(CATALOG_SQL))]
    assert len(sent) >= 5  # the seed links elements to a few percent of the contacts
    assert {q for *_, q, _ in sent} != {1}  # quantities vary, so a wrong source would show
    assert stored == sent
