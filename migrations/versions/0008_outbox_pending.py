"""outbox: a partial index of pending rows in id order, for the relay's claim

The claim (``_CLAIM`` in ``integrations/relay.py``) takes due pending rows ``ORDER BY id LIMIT n``.
With a backlog (a Sendbird outage, a burst of sends) PostgreSQL walks the primary key to honour the
order and filters out every done row on the way, and done rows are never deleted. Measured (EXPLAIN
ANALYZE of the real claim, 200,000 done and 20,000 pending rows over 200 conversations, median of
20): 22 ms per claim after 0007, 0.66 ms with this index, which holds only pending rows, in id
order.

Built CONCURRENTLY for the reasons migration 0007 gives.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_pending"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON outbox (id) WHERE status = 'pending'")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
