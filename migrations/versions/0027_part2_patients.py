"""patients: a patient may be marked as covering 42 CFR Part 2 records

A Part 2 patient's consents must be Part 2 consents (with the elements of 42 CFR 2.31); the consent
workflow refuses one without them.

Revision ID: 0027
Revises: 0024
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("patients", sa.Column("part2", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("patients", "part2")
