"""Alembic migrations of the amocrm-sync schema (applied by `amosync db upgrade`)."""
