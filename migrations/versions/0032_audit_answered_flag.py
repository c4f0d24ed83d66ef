"""audit_events: whether a record is one its actor was not told of, in the time index

A decision about a record its actor may not know of is stored with what the actor was answered
instead (``details.answered``: ``engine.audit.ANSWERED``), and the actor's organization's view leaves
it out (``integrations.db.audit.visible_to``): its auditors see what a request for a missing id
leaves, never a sign of another organization's record. Reading that from ``details`` needed every
own record's row, so a time-range search and the charts no longer read the time index alone (0017):
1.5-2.5 times slower on 400,000 records. ``answered`` is that test as a stored generated column
(PostgreSQL keeps it; no writer sets it), included in ``ix_audit_events_occurred_at_visible`` so the
searches read the index alone again. It is not part of a record's chained content
(``integrations.db.audit.CONTENT_FIELDS``): no digest changes.

Adding a stored column rewrites the table, and the index is built again: both hold audit writes
meanwhile (seconds per million records); ``caremsg migrate`` runs before the service serves.

Revision ID: 0032
Revises: 0031
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_audit_events_occurred_at_visible"
#: 0017's columns: whose record it is, and what the charts count.
INCLUDED = ["id", "organization_id", "patient_id", "decision", "outcome", "reason", "workflow"]


def upgrade() -> None:
    op.add_column(
        "audit_events",
        sa.Column("answered", sa.Boolean(), sa.Computed("(details -> 'answered') IS NOT NULL", persisted=True)),
    )
    op.drop_index(INDEX, table_name="audit_events")
    op.create_index(INDEX, "audit_events", ["occurred_at"], unique=False, postgresql_include=[*INCLUDED, "answered"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="audit_events")
    op.create_index(INDEX, "audit_events", ["occurred_at"], unique=False, postgresql_include=INCLUDED)
    op.drop_column("audit_events", "answered")
