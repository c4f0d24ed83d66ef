"""hash-chained audit records (issue 5)

- ``audit_events.subject_hash``: keyed hash of a searchable identifier (a failed login's email).
- ``audit_chain``: the hash chain over ``audit_events``, written by the background sealer only.
  It lives beside the events so that ``audit_events`` stays strictly append-only: sealing never
  updates an event row.
- ``audit_anchors``: signed checkpoints of the chain head (``caremsg audit anchor --store``).
- ``audit_events_writer_lock``: a statement-level BEFORE INSERT trigger on ``audit_events`` that
  takes the shared advisory lock the chain sealer takes exclusively to learn which ids are final
  (``integrations/audit_sealer.py``). Statement-level BEFORE triggers fire before any row's default
  (``nextval``) is evaluated, so no writer can hold an id while the sealer reads the horizon; and it
  costs a request no extra round trip.
- Both new tables refuse UPDATE, DELETE and TRUNCATE by trigger, for every role, like
  ``audit_events`` (0002). Where the deployment has a separate application role named
  ``caremsg_app``, its UPDATE/DELETE/TRUNCATE privileges on the three audit tables are revoked too.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_chain", "audit_anchors")
AUDIT_WRITE_LOCK = 0x636D6177  # integrations/audit_sealer.py: the same key


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("subject_hash", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_audit_events_subject_hash"), "audit_events", ["subject_hash"], unique=False)

    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_chain_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_chain")),
        sa.UniqueConstraint("event_id", name=op.f("uq_audit_chain_event_id")),
    )
    op.create_index(op.f("ix_audit_chain_digest"), "audit_chain", ["digest"], unique=False)

    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_anchors")),
    )

    op.execute(
        """
        CREATE FUNCTION audit_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION audit_events_writer_lock() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared({AUDIT_WRITE_LOCK});
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_writer_lock BEFORE INSERT ON audit_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_events_writer_lock()"
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'caremsg_app') THEN
                REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_chain, audit_anchors
                    FROM caremsg_app;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    op.execute("DROP FUNCTION audit_refuse_change()")
    op.execute("DROP TRIGGER audit_events_writer_lock ON audit_events")
    op.execute("DROP FUNCTION audit_events_writer_lock()")
    op.drop_table("audit_anchors")
    op.drop_index(op.f("ix_audit_chain_digest"), table_name="audit_chain")
    op.drop_table("audit_chain")
    op.drop_index(op.f("ix_audit_events_subject_hash"), table_name="audit_events")
    op.drop_column("audit_events", "subject_hash")
