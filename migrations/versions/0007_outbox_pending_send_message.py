"""outbox: a partial index for the relay's "an earlier message of this conversation is pending" check

The relay's claim (``_CLAIM`` in ``integrations/relay.py``) lets a ``send_message`` entry in only when
no earlier pending ``send_message`` of the same conversation exists. Without this index that NOT
EXISTS probe walks ``ix_outbox_conversation_id``, i.e. every outbox row the conversation ever had,
and done rows are never deleted, so each claim grew slower as a conversation's history grew. The
index holds only pending ``send_message`` rows, keyed (conversation_id, id): the probe reads at most
one entry.

Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would block every
write to ``outbox`` (every send) while it reads the whole table, and ``caremsg serve`` migrates on
start while other instances may be serving. A concurrent build that fails leaves an INVALID index
behind; the upgrade drops any such leftover first, so running it again is safe.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_pending_send_message"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON outbox (conversation_id, id)"
            " WHERE status = 'pending' AND kind = 'send_message'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
