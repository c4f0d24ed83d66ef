"""Table models for durable messaging, SMS and webhooks (issue 3).

Imported by integrations.db.tables so Alembic sees them.
"""

from __future__ import annotations
