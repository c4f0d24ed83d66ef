"""messages: content retention (content_deleted_at) and legal holds

A message whose content outlived its organization's lifespan (policies/retention.toml) keeps its row
(ids, sender, times, deliveries) but its text is emptied and ``content_deleted_at`` says when; a
recalled message's legal record loses its text the same way (who recalled it, when and why stay).
Audit records are never touched. ``legal_holds`` holds content back from the sweep while a hold on
its patient or its conversation lasts (``lifted_at`` null). The partial index serves the sweep's
claim: only messages that still have content are read.

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("content_deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        op.f("ix_messages_created_at_content_kept"),
        "messages",
        ["created_at"],
        postgresql_where=sa.text("content_deleted_at IS NULL"),
    )
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("placed_by", sa.Integer(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.Integer(), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lift_reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "(patient_id IS NULL) <> (conversation_id IS NULL)", name=op.f("ck_legal_holds_subject")
        ),
        sa.CheckConstraint("(lifted_at IS NULL) = (lifted_by IS NULL)", name=op.f("ck_legal_holds_lifted")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_legal_holds_organization_id_organizations")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_legal_holds_patient_id_patients")),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_legal_holds_conversation_id_conversations")
        ),
        sa.ForeignKeyConstraint(["placed_by"], ["users.id"], name=op.f("fk_legal_holds_placed_by_users")),
        sa.ForeignKeyConstraint(["lifted_by"], ["users.id"], name=op.f("fk_legal_holds_lifted_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index(
        op.f("ix_legal_holds_patient_id"),
        "legal_holds",
        ["patient_id"],
        postgresql_where=sa.text("lifted_at IS NULL"),
    )
    op.create_index(
        op.f("ix_legal_holds_conversation_id"),
        "legal_holds",
        ["conversation_id"],
        postgresql_where=sa.text("lifted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_legal_holds_conversation_id"), table_name="legal_holds")
    op.drop_index(op.f("ix_legal_holds_patient_id"), table_name="legal_holds")
    op.drop_table("legal_holds")
    op.drop_index(op.f("ix_messages_created_at_content_kept"), table_name="messages")
    op.drop_column("messages", "content_deleted_at")
