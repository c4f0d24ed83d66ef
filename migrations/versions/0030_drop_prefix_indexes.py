"""drop four indexes that another index of the same table already leads with

Each of these single-column indexes is the first column of a wider index on the same table, so any
lookup, join or foreign-key check by that column can use the wider one (a B-tree serves every
leading prefix of its columns):

- ``messages (conversation_id)``: ``ix_messages_conversation_id_id`` (conversation_id, id);
- ``message_deliveries (message_id)``: ``uq_message_deliveries_message_recipient`` (message_id, recipient);
- ``external_participants (conversation_id)``: their unique (conversation_id, phone_number);
- ``compliance_groups (organization_id)``: their unique (organization_id, name).

The first two are written on every send (a message, and a delivery row per recipient): each index
is one more entry to insert and keep, for nothing a query needs. A test keeps the schema free of
such indexes (tests/integration/test_migrations.py).

Dropping an index takes a brief ACCESS EXCLUSIVE lock on its table; these statements do no work
proportional to the table, so ``caremsg serve`` can apply them while other instances serve.

Revision ID: 0030
Revises: 0029
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (index, table, column) of each index dropped.
DROPPED = (
    ("ix_messages_conversation_id", "messages", "conversation_id"),
    ("ix_message_deliveries_message_id", "message_deliveries", "message_id"),
    ("ix_external_participants_conversation_id", "external_participants", "conversation_id"),
    ("ix_compliance_groups_organization_id", "compliance_groups", "organization_id"),
)


def upgrade() -> None:
    for index, table, _ in DROPPED:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for index, table, column in DROPPED:
        op.create_index(index, table, [column])
