"""patients: a patient may be marked as covering 42 CFR Part 2 records; part2_notices

A Part 2 patient's consents must be Part 2 consents (with the elements of 42 CFR 2.31); the consent
workflow refuses one without them. ``part2_notices`` records the 42 CFR 2.32 notice given in a
conversation to a recipient organization's members, once per (conversation, organization).

Revision ID: 0027
Revises: 0026
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("patients", sa.Column("part2", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "part2_notices",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("consent_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_part2_notices_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_part2_notices_organization_id_organizations")
        ),
        sa.ForeignKeyConstraint(["consent_id"], ["consents.id"], name=op.f("fk_part2_notices_consent_id_consents")),
        sa.PrimaryKeyConstraint("conversation_id", "organization_id", name=op.f("pk_part2_notices")),
    )


def downgrade() -> None:
    op.drop_table("part2_notices")
    op.drop_column("patients", "part2")
