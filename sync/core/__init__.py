"""The pure layer below `sync/db` and `sync/amo` that both sides share: the domain's names
(`models`), when two amoCRM values are the same (`values`), the shapes a local
`custom_fields_values` may take (`cf_shape`), and the outbox's items as values (`items`).
Pure: no I/O, and nothing imported from above (tests/unit/test_layers.py)."""
