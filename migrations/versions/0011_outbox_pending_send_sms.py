"""outbox: a partial index for the relay's "an earlier text of this conversation is pending" check

The relay's claim (``_CLAIM`` in ``integrations/relay.py``) lets a ``send_sms`` entry in only when no
earlier pending ``send_sms`` of the same conversation exists, so a conversation's texts go out in the
order they were accepted even after an outage (issue 10). Without this index that NOT EXISTS probe
walks every outbox row the conversation ever had (done rows are never deleted); with it, at most
one entry: the same reasoning, and the same CONCURRENTLY build, as 0007 for ``send_message``.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_pending_send_sms"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON outbox (conversation_id, id)"
            " WHERE status = 'pending' AND kind = 'send_sms'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
