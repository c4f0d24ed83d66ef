"""outbox: one partial index for the claim's "an earlier entry of this kind is pending" probe

The relay's claim (``CLAIM`` in ``integrations/relay/statements.py``) lets a conversation's message
post, or text, in only when no earlier pending entry of the same kind and conversation exists, so
posts and texts keep the order they were accepted in. Until now two partial indexes answered that
probe, one per kind, each with its kind spelled in its predicate (0007, 0011); the claim had to
spell the kinds too, for the planner to prove a predicate from a constant. The kinds now reach the
claim as bind parameters derived from the effect types (engine/effects.py), and the probe compares
``e.kind = o.kind``: this one index, keyed (kind, conversation_id, id) over pending rows only,
answers it for every kind, whatever the statement's plan. Pending rows are few, so it stays small.

Built CONCURRENTLY, like 0007 and 0011 (no write to ``outbox`` is blocked while it is built; a
failed build's INVALID leftover is dropped first), and the two indexes it replaces are dropped
afterwards. Stored kinds do not change: rows already in the table keep working.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_pending_in_order"
REPLACED = {
    "ix_outbox_pending_send_message": "send_message",
    "ix_outbox_pending_send_sms": "send_sms",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON outbox (kind, conversation_id, id) WHERE status = 'pending'"
        )
        for index in REPLACED:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        # The kinds as they were stored at revision 0013 (the indexes this one replaced).
        for index, kind in REPLACED.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
            op.execute(
                f"CREATE INDEX CONCURRENTLY {index} ON outbox (conversation_id, id)"
                f" WHERE status = 'pending' AND kind = '{kind}'"
            )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
