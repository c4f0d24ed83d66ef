"""outbox: statistics taken after every thousand changes, however large the table has grown

The relay's claims (integrations/relay/statements.py) read a conversation's queue through the partial
indexes of pending entries. PostgreSQL plans them from its statistics and keeps the plan of a
prepared statement until the table is analyzed again. When the statistics say few entries are
pending while thousands are (a backlog after a chat outage), the kept plan walks every pending entry
on each claim: draining the backlog then costs its square (tests/integration/test_relay_plans.py).

By default autovacuum analyzes a table after 50 changes plus 10 % of its rows, and outbox rows are
never deleted (a done entry is the record of a delivery), so the threshold grows with the service's
age: at ten million rows, a million changes. With a fixed threshold of 1,000 changes the statistics
follow the pending set within autovacuum's interval (a minute by default) at any size, and the new
statistics replace the kept plans (PostgreSQL plans a prepared statement again when the statistics of
a table it uses were updated since its last use: the PREPARE documentation). ANALYZE reads a fixed sample (30,000 rows at the default
statistics target), so its cost does not grow with the table either.

ALTER TABLE ... SET for autovacuum settings takes a SHARE UPDATE EXCLUSIVE lock: it does not block
reads or writes, so ``caremsg serve`` can apply it while other instances serve.

Revision ID: 0029
Revises: 0028
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Changes (inserts, updates, deletes) to the outbox after which autovacuum analyzes it again.
ANALYZE_AFTER_CHANGES = 1_000


def upgrade() -> None:
    op.execute(
        "ALTER TABLE outbox SET (autovacuum_analyze_scale_factor = 0,"
        f" autovacuum_analyze_threshold = {ANALYZE_AFTER_CHANGES})"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE outbox RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)")
