"""Table models for policy, consent lifecycle and break-the-glass (issue 4).

Imported by integrations.db.tables so Alembic sees them.
"""

from __future__ import annotations
