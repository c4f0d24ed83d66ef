"""consents: the elements of a 42 CFR Part 2 consent (2.31)

A consent that covers Part 2 records must name who may disclose, what information, the patient's
signature and its date, and an expiry date or the event that ends it; its recipient and purpose are
the consent's own columns. The check refuses a Part 2 row without them, whatever wrote it.

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_consents_part2_elements"
ELEMENTS = (
    "NOT part2 OR (part2_discloser IS NOT NULL AND part2_information IS NOT NULL"
    " AND part2_signed_by IS NOT NULL AND part2_signed_on IS NOT NULL"
    " AND (expires_at IS NOT NULL OR part2_expiry_event IS NOT NULL))"
)


def upgrade() -> None:
    op.add_column("consents", sa.Column("part2", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("consents", sa.Column("part2_discloser", sa.String(length=200), nullable=True))
    op.add_column("consents", sa.Column("part2_information", sa.String(length=500), nullable=True))
    op.add_column("consents", sa.Column("part2_expiry_event", sa.String(length=200), nullable=True))
    op.add_column("consents", sa.Column("part2_signed_by", sa.String(length=200), nullable=True))
    op.add_column("consents", sa.Column("part2_signed_on", sa.Date(), nullable=True))
    op.create_check_constraint(op.f(CHECK), "consents", ELEMENTS)


def downgrade() -> None:
    op.drop_constraint(op.f(CHECK), "consents", type_="check")
    for column in (
        "part2_signed_on",
        "part2_signed_by",
        "part2_expiry_event",
        "part2_information",
        "part2_discloser",
        "part2",
    ):
        op.drop_column("consents", column)
