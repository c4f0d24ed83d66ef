"""retention's look-ups of a message's other copies: partial indexes on idempotency_keys and outbox

The retention sweep (integrations/db/retention.py) deletes every copy of a message's content in the
batch that deletes its text. Two of those copies are found by columns nothing indexed:

- the stored response of a message's sending (``idempotency_keys``, operation ``message.send``),
  found by the message id it created (``resource_id``); rows are never deleted, only taken over when
  their key is reused, so without an index each batch would read the whole table;
- an external participant's SMS reply, whose text lives only in the outbox entry that posts it
  (kind ``post_sms_reply``) while that entry still holds it: found oldest first (``created_at``).

Built CONCURRENTLY, outside the migration's transaction, as 0007 does: ``caremsg serve`` migrates on
start while other instances may be serving, and a plain CREATE INDEX would block every send.

Revision ID: 0028
Revises: 0027
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESPONSES = "ix_idempotency_keys_message_send"
REPLIES = "ix_outbox_sms_reply_text"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {RESPONSES}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {RESPONSES} ON idempotency_keys (resource_id)"
            " WHERE operation = 'message.send'"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REPLIES}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {REPLIES} ON outbox (created_at)"
            " WHERE kind = 'post_sms_reply' AND (payload -> 'text') IS NOT NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REPLIES}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {RESPONSES}")
