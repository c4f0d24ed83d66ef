"""messages.priority and acknowledgement, escalation_steps, users.alert_phone: urgent messages

- ``messages.priority``: ``routine`` (every message so far) or ``urgent``. An urgent message carries
  who acknowledged it first and when (``acknowledged_by``/``acknowledged_at``, set once), and while
  nobody has, when the escalation scheduler next looks at it (``escalation_due_at``; a partial index
  keeps the scheduler's claim to the messages due).
- ``escalation_steps``: each step taken (re-alert round, text, on-call, admin), unique per message,
  step and round: it is inserted in the transaction that queues the step's outbox entry, so a step
  runs once however many schedulers run. Its state follows the delivery (done, cancelled when the
  message was acknowledged first, failed; ``none`` when there was nobody to alert).
- ``users.alert_phone``: a staff member's registered phone for urgent-message texts (no clinical
  content is ever texted to it). The identity tables had no phone for staff.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("priority", sa.String(length=8), server_default=sa.text("'routine'"), nullable=False),
    )
    op.add_column("messages", sa.Column("acknowledged_by", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("escalation_due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_messages_priority"), "messages", "priority IN ('routine','urgent')")
    op.create_foreign_key(
        op.f("fk_messages_acknowledged_by_users"), "messages", "users", ["acknowledged_by"], ["id"]
    )
    op.create_index(
        "ix_messages_escalation_due_at",
        "messages",
        ["escalation_due_at"],
        postgresql_where=sa.text("escalation_due_at IS NOT NULL"),
    )
    op.add_column("users", sa.Column("alert_phone", sa.String(length=20), nullable=True))
    op.create_table(
        "escalation_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_user_ids", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("state", sa.String(length=16), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("step IN ('realert','text','on_call','admin')", name=op.f("ck_escalation_steps_step")),
        sa.CheckConstraint(
            "state IN ('queued','done','cancelled','failed','none')", name=op.f("ck_escalation_steps_state")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_escalation_steps_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_steps")),
        sa.UniqueConstraint("message_id", "step", "round", name="uq_escalation_steps_message_id_step_round"),
    )


def downgrade() -> None:
    op.drop_table("escalation_steps")
    op.drop_column("users", "alert_phone")
    op.drop_index("ix_messages_escalation_due_at", table_name="messages")
    op.drop_constraint(op.f("fk_messages_acknowledged_by_users"), "messages", type_="foreignkey")
    op.drop_constraint(op.f("ck_messages_priority"), "messages", type_="check")
    for column in ("escalation_due_at", "acknowledged_at", "acknowledged_by", "priority"):
        op.drop_column("messages", column)
