"""amocrm-sync: two-way sync between amoCRM (Kommo) contacts and PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
