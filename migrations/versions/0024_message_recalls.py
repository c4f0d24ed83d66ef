"""messages: recall and correction; the legal record of recalled content

A recalled message keeps its row (ids, sender, times, delivery rows) but its text moves out of
``messages.body`` into ``message_recalls``, the legal record, with who recalled it, when and why.
A correction is a new message that names the one it replaces (``corrects_message_id``); the
original names its correction (``corrected_by_message_id``). Outbox entries of a recalled message
that had not gone out yet are ``cancelled``.

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("recalled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "messages",
        sa.Column(
            "recalled_by", sa.Integer(), sa.ForeignKey("users.id", name=op.f("fk_messages_recalled_by_users")),
            nullable=True,
        ),
    )
    op.add_column(
        "messages",
        sa.Column(
            "corrects_message_id",
            sa.Integer(),
            sa.ForeignKey("messages.id", name=op.f("fk_messages_corrects_message_id_messages")),
            nullable=True,
        ),
    )
    op.add_column(
        "messages",
        sa.Column(
            "corrected_by_message_id",
            sa.Integer(),
            sa.ForeignKey("messages.id", name=op.f("fk_messages_corrected_by_message_id_messages")),
            nullable=True,
        ),
    )
    op.create_check_constraint(
        op.f("ck_messages_recalled"), "messages", "(recalled_at IS NULL) = (recalled_by IS NULL)"
    )
    op.create_table(
        "message_recalls",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("recalled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recalled_by", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_message_recalls_message_id_messages")
        ),
        sa.ForeignKeyConstraint(["recalled_by"], ["users.id"], name=op.f("fk_message_recalls_recalled_by_users")),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_recalls")),
    )
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(
        op.f("ck_outbox_status"), "outbox", "status IN ('pending','done','failed','cancelled')"
    )


def downgrade() -> None:
    op.execute("UPDATE outbox SET status = 'failed' WHERE status = 'cancelled'")
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(op.f("ck_outbox_status"), "outbox", "status IN ('pending','done','failed')")
    op.drop_table("message_recalls")
    op.drop_constraint(op.f("ck_messages_recalled"), "messages", type_="check")
    for column in ("corrected_by_message_id", "corrects_message_id", "recalled_by", "recalled_at"):
        op.drop_column("messages", column)
