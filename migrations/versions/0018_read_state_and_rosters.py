"""conversation_reads, on_call_shifts, staff_away: read state per member, the care team's on-call roster
and staff away with a delegate

- ``conversation_reads``: per conversation and member, the last message read and when, and whether a
  caremsg client (``api``) or a chat client's receipt (``chat``) said so.
- ``on_call_shifts``: a care team's on-call windows (UTC; ``ends_at`` after ``starts_at``); overlaps and
  gaps are reported by the roster workflow, not refused here.
- ``staff_away``: a staff member away (open-ended while ``ends_at`` is null) and their delegate for
  urgent messages.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_reads",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("last_read_message_id", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.CheckConstraint("source IN ('api','chat')", name=op.f("ck_conversation_reads_source")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_reads_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["last_read_message_id"],
            ["messages.id"],
            name=op.f("fk_conversation_reads_last_read_message_id_messages"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_conversation_reads_user_id_users")),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name=op.f("pk_conversation_reads")),
    )
    op.create_index(op.f("ix_conversation_reads_user_id"), "conversation_reads", ["user_id"])

    op.create_table(
        "on_call_shifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("care_team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_on_call_shifts_window")),
        sa.ForeignKeyConstraint(
            ["care_team_id"],
            ["care_teams.id"],
            name=op.f("fk_on_call_shifts_care_team_id_care_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_on_call_shifts_created_by_users")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_on_call_shifts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_on_call_shifts")),
    )
    op.create_index(
        "ix_on_call_shifts_care_team_id_starts_at", "on_call_shifts", ["care_team_id", "starts_at"]
    )
    op.create_index(op.f("ix_on_call_shifts_user_id"), "on_call_shifts", ["user_id"])

    op.create_table(
        "staff_away",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("delegate_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("delegate_id <> user_id", name=op.f("ck_staff_away_delegate_not_self")),
        sa.CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name=op.f("ck_staff_away_window")),
        sa.ForeignKeyConstraint(["delegate_id"], ["users.id"], name=op.f("fk_staff_away_delegate_id_users")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_staff_away_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_away")),
    )
    op.create_index(op.f("ix_staff_away_user_id"), "staff_away", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_staff_away_user_id"), table_name="staff_away")
    op.drop_table("staff_away")
    op.drop_index(op.f("ix_on_call_shifts_user_id"), table_name="on_call_shifts")
    op.drop_index("ix_on_call_shifts_care_team_id_starts_at", table_name="on_call_shifts")
    op.drop_table("on_call_shifts")
    op.drop_index(op.f("ix_conversation_reads_user_id"), table_name="conversation_reads")
    op.drop_table("conversation_reads")
