"""Everything that speaks SQL: schema, migrations, engine and the repository."""
