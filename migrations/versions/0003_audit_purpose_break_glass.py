"""audit_events records the purpose of use and whether break-the-glass access was in force

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("purpose", sa.String(length=32), nullable=True))
    op.add_column(
        "audit_events", sa.Column("break_glass", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("audit_events", "break_glass")
    op.drop_column("audit_events", "purpose")
