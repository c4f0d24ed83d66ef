"""consents.expiry_swept_at: when the expiry sweep ended what an expired consent granted

A consent's access ends at ``expires_at`` by itself (decisions compare the time), but what it let
happen outside the decision does not: staff of other organizations stay members of the patient's
chat channels and external participants stay admitted for SMS. The sweep ends those as a
revocation does, once per consent; the partial index is its claim.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_consents_expiry_sweep"


def upgrade() -> None:
    op.add_column("consents", sa.Column("expiry_swept_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        INDEX,
        "consents",
        ["expires_at"],
        postgresql_where=sa.text("expiry_swept_at IS NULL AND revoked_at IS NULL AND expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="consents")
    op.drop_column("consents", "expiry_swept_at")
