"""audit_events: the time index covers what a time-range search of the trail asks for

A search by time range (``GET /api/audit-events?from=…&to=…``, the console's audit search) first
gathers the matching ids through the time index, then takes the lowest (``integrations/db/audit.py``,
``SqlAuditTrail._in_range``); the console's charts count a time range's decisions by outcome and
reason (``integrations/db/audit_figures.py``). ``ix_audit_events_occurred_at`` becomes
``ix_audit_events_occurred_at_visible``: the same key, plus the id, the two columns that decide whose
record it is (``organization_id``, ``patient_id``) and the four the charts count by, so both read the
index alone (an index-only scan; the table is append-only, so its visibility map stays set). Still
one index entry per record, as before: an audit insert updates no more indexes than it did. With a
million records a week's search went from about 0.4 s to about 15 ms (median; bench/README.md).

Building it reads the whole table and holds audit writes meanwhile (seconds per million records);
``caremsg migrate`` runs before the service serves.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Whose record it is (the search's visibility), and what the charts count (decision, outcome,
#: reason, workflow): both read a time range from the index alone.
INCLUDED = ["id", "organization_id", "patient_id", "decision", "outcome", "reason", "workflow"]


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_occurred_at_visible",
        "audit_events",
        ["occurred_at"],
        unique=False,
        postgresql_include=INCLUDED,
    )
    op.drop_index("ix_audit_events_occurred_at", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"], unique=False)
    op.drop_index("ix_audit_events_occurred_at_visible", table_name="audit_events")
