"""Table models for the tamper-evident audit trail (issue 5).

Imported by integrations.db.tables so Alembic sees them.
"""

from __future__ import annotations
