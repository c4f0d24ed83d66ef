"""idempotency_keys keep no copy of the answer: ``response_body`` emptied and dropped

A key stored its first request's whole answer (a message's text, a conversation's title) for
``messaging.idempotency_ttl_hours``. Since a repeat is answered with what the key created read again
(``integrations/idempotency.py``), nothing reads that copy: it was PHI kept for nothing, and
retention had to empty it (a statement per batch and 0028's partial index
``ix_idempotency_keys_message_send``, which served nothing else).

Every operation that takes a key (``conversation.create``, ``message.send``, ``message.attach``)
creates something and names it (``resource_id``) in the transaction that creates it, before the key
is completed; so a completed key never needed its body, and the new check
``ck_idempotency_keys_completed_names_resource`` holds every key to that. A completed key without a
resource could not be answered any more: none can exist (binding has been done in the action's
transaction since keys were introduced), and any that did is deleted, as if it had expired.

The bodies are set to null **before** the column is dropped: ``DROP COLUMN`` only hides a column,
its values would stay in every row until the row is next written. The update leaves the old row
versions dead, for (auto)vacuum to reclaim; ``VACUUM FULL idempotency_keys`` scrubs the file at once.

The table holds one ttl of keys; the migration locks it (and so requests sent with a key wait) for
the time it takes to rewrite those rows. Instances still running the previous release read and
write ``response_body``: once it is dropped, a request with a key they serve answers 500 (after
committing, if it got that far; a retry with the key is then answered from what was created once
its lease lapses). Requests without a key are not affected.

The downgrade adds the column back, empty, and the index: the previous release answers a repeat from
``resource_id`` and never reads a body for a key that has one.

Revision ID: 0034
Revises: 0033
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "idempotency_keys"
CHECK = "ck_idempotency_keys_completed_names_resource"
RESPONSES = "ix_idempotency_keys_message_send"  # 0028


def upgrade() -> None:
    op.execute(f"UPDATE {TABLE} SET response_body = NULL WHERE response_body IS NOT NULL")
    op.execute(f"DELETE FROM {TABLE} WHERE state = 'completed' AND resource_id IS NULL")
    op.drop_index(RESPONSES, table_name=TABLE)
    op.drop_column(TABLE, "response_body")
    op.create_check_constraint(op.f(CHECK), TABLE, "state = 'in_progress' OR resource_id IS NOT NULL")


def downgrade() -> None:
    op.drop_constraint(op.f(CHECK), TABLE, type_="check")
    op.add_column(TABLE, sa.Column("response_body", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_index(RESPONSES, TABLE, ["resource_id"], postgresql_where=sa.text("operation = 'message.send'"))
