"""break_glass_sessions: the compliance review (who reviewed a session, when, with which note)

A compliance officer of the session's organization (its clinician's or its patient's) marks an
emergency session reviewed once, with a note (the console's break-glass review list,
``break_glass.review``). The three columns are set together or not at all; a reviewed session is
never reviewed again (the workflow's update only touches a row whose ``reviewed_at`` is null).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "break_glass_sessions"
CHECK = "ck_break_glass_sessions_review_complete"
FOREIGN_KEY = "fk_break_glass_sessions_reviewed_by_users"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(TABLE, sa.Column("reviewed_by", sa.Integer(), nullable=True))
    op.create_foreign_key(op.f(FOREIGN_KEY), TABLE, "users", ["reviewed_by"], ["id"])
    op.add_column(TABLE, sa.Column("review_note", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f(CHECK),
        TABLE,
        "(reviewed_at IS NULL AND reviewed_by IS NULL AND review_note IS NULL)"
        " OR (reviewed_at IS NOT NULL AND reviewed_by IS NOT NULL AND char_length(review_note) >= 1)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f(CHECK), TABLE, type_="check")
    op.drop_constraint(op.f(FOREIGN_KEY), TABLE, type_="foreignkey")
    op.drop_column(TABLE, "review_note")
    op.drop_column(TABLE, "reviewed_by")
    op.drop_column(TABLE, "reviewed_at")
