"""conversation_on_call: conversations that include a care team's on-call role instead of a person

One row per conversation that routes to the role: the care team (the conversation's patient's) and
who holds the role in the chat channel now (``holder_id``; null while nobody is on call). The hand-off
scheduler moves the holder when a shift of the team begins or ends.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_on_call",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("care_team_id", sa.Integer(), nullable=False),
        sa.Column("holder_id", sa.Integer(), nullable=True),
        sa.Column("holder_since", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("added_by", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_on_call_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["care_team_id"],
            ["care_teams.id"],
            name=op.f("fk_conversation_on_call_care_team_id_care_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["holder_id"], ["users.id"], name=op.f("fk_conversation_on_call_holder_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["added_by"], ["users.id"], name=op.f("fk_conversation_on_call_added_by_users")
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_on_call")),
    )
    op.create_index(op.f("ix_conversation_on_call_care_team_id"), "conversation_on_call", ["care_team_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_conversation_on_call_care_team_id"), table_name="conversation_on_call")
    op.drop_table("conversation_on_call")
