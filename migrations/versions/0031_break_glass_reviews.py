"""break_glass_reviews: each organization reviews an emergency session on its own

A session opened on another organization's patient concerns two organizations: the patient's, whose
record was opened, and the clinician's, whose staff opened it. Migration 0015 gave a session one
review (``reviewed_at``, ``reviewed_by``, ``review_note`` on ``break_glass_sessions``), so whichever
organization reviewed first closed the review for the other (409) and each read the other's note,
which may describe the patient's circumstances. Now a review is a row per (session, organization):
the patient's organization can always review access to its patient, the clinician's reviews its own
staff's use, and each reads only its own.

The upgrade moves each existing review to the reviewer's organization (the only one that wrote it)
and drops the three columns. The downgrade puts one review back per session, the patient's
organization's when both reviewed (the other's is lost: the old schema has room for one).

Revision ID: 0031
Revises: 0030
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
# 0031 is being written on another branch; whoever merges both points this at it.
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSIONS = "break_glass_sessions"
REVIEWS = "break_glass_reviews"
SESSION_CHECK = "ck_break_glass_sessions_review_complete"
SESSION_FOREIGN_KEY = "fk_break_glass_sessions_reviewed_by_users"
SESSION_REVIEW = (
    "(reviewed_at IS NULL AND reviewed_by IS NULL AND review_note IS NULL)"
    " OR (reviewed_at IS NOT NULL AND reviewed_by IS NOT NULL AND char_length(review_note) >= 1)"
)


def upgrade() -> None:
    op.create_table(
        REVIEWS,
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("reviewed_by", sa.Integer(), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.CheckConstraint("char_length(note) >= 1", name=op.f("ck_break_glass_reviews_note_length")),
        sa.ForeignKeyConstraint(
            ["session_id"], [f"{SESSIONS}.id"], name=op.f("fk_break_glass_reviews_session_id_break_glass_sessions")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_break_glass_reviews_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name=op.f("fk_break_glass_reviews_reviewed_by_users")
        ),
        sa.PrimaryKeyConstraint("session_id", "organization_id", name=op.f("pk_break_glass_reviews")),
    )
    op.execute(
        f"INSERT INTO {REVIEWS} (session_id, organization_id, reviewed_by, reviewed_at, note)"
        f" SELECT s.id, u.organization_id, s.reviewed_by, s.reviewed_at, s.review_note"
        f" FROM {SESSIONS} s JOIN users u ON u.id = s.reviewed_by WHERE s.reviewed_at IS NOT NULL"
    )
    op.drop_constraint(op.f(SESSION_CHECK), SESSIONS, type_="check")
    op.drop_constraint(op.f(SESSION_FOREIGN_KEY), SESSIONS, type_="foreignkey")
    op.drop_column(SESSIONS, "review_note")
    op.drop_column(SESSIONS, "reviewed_by")
    op.drop_column(SESSIONS, "reviewed_at")


def downgrade() -> None:
    op.add_column(SESSIONS, sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(SESSIONS, sa.Column("reviewed_by", sa.Integer(), nullable=True))
    op.create_foreign_key(op.f(SESSION_FOREIGN_KEY), SESSIONS, "users", ["reviewed_by"], ["id"])
    op.add_column(SESSIONS, sa.Column("review_note", sa.Text(), nullable=True))
    op.execute(
        f"UPDATE {SESSIONS} s SET reviewed_at = r.reviewed_at, reviewed_by = r.reviewed_by,"
        f" review_note = r.note"
        f" FROM (SELECT DISTINCT ON (r.session_id) r.*"
        f"       FROM {REVIEWS} r JOIN {SESSIONS} bs ON bs.id = r.session_id"
        f"       JOIN patients p ON p.id = bs.patient_id"
        f"       ORDER BY r.session_id, (r.organization_id = p.organization_id) DESC) r"
        f" WHERE r.session_id = s.id"
    )
    op.create_check_constraint(op.f(SESSION_CHECK), SESSIONS, SESSION_REVIEW)
    op.drop_table(REVIEWS)
