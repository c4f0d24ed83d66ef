"""messages: an index on (conversation_id, id), for unread counts

A member's unread count in a conversation is the messages after their read mark
(``conversation_reads.last_read_message_id``): with this index it is a range scan of just those,
so listing conversations costs what is unread, not each conversation's whole history. It also
serves a conversation's most recent messages (ordered by id).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_conversation_id_id", "messages", ["conversation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_conversation_id_id", table_name="messages")
