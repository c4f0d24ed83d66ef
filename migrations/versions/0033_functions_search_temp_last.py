"""the audit trail's functions search the caller's temporary schema last

PostgreSQL looks a table or sequence name up in the session's temporary schema first unless the
search_path names ``pg_temp``, and every role, the application role included, may create temporary
objects by default. So the application role (or an SQL injection through it) could make the
functions that protect the audit trail find objects of its own:

- ``audit_events_assign_id`` (0010) draws ``nextval('audit_events_id_seq')``: a temporary sequence
  of that name gave an inserted record any id the caller chose, the forgery at ``max(id) + 1000``
  the trigger exists to prevent.
- ``audit_chain_append`` (0010, SECURITY DEFINER) had ``search_path = pg_catalog, public``, which
  leaves ``pg_temp`` first: with a temporary ``audit_events`` and ``audit_events_id_seq`` it checked a
  batch against the caller's rows and sealed, into the real ``audit_chain``, an event that does not
  exist, far past every id to come, after which nothing written later could be sealed.

Every function of the schema now names ``pg_temp`` last (PostgreSQL's advice for SECURITY DEFINER
functions, kept for all of them so a new one copies a safe example);
``tests/integration/test_database_roles.py`` holds every function to it.

Revision ID: 0033
Revises: 0032
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_PATH = "pg_catalog, public, pg_temp"
APPEND = "audit_chain_append(bigint[], bigint[], text[], text[], text[])"
FUNCTIONS = (
    "audit_events_refuse_change()",  # 0002
    "audit_refuse_change()",  # 0006
    "audit_events_writer_lock()",  # 0006
    "audit_events_assign_id()",  # 0010
    APPEND,  # 0010
)


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET search_path = {SEARCH_PATH}")


def downgrade() -> None:
    for function in FUNCTIONS:
        if function == APPEND:
            op.execute(f"ALTER FUNCTION {function} SET search_path = pg_catalog, public")
        else:
            op.execute(f"ALTER FUNCTION {function} RESET search_path")
