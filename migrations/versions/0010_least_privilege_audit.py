"""least privilege for the audit trail; idempotency keys held by a short lease

The service connects as an application role that owns nothing (``integrations/db/roles.py``), so it
cannot switch triggers off or grant itself anything. Two writes remain to it that could still
poison the trail, and this migration closes them:

- ``audit_events.id`` is always drawn from the table's sequence, by a BEFORE INSERT row trigger
  (``audit_events_assign_id``), whatever the INSERT says: a row cannot be forged at ``max(id) + 1000``
  by an INSERT that names its id (``OVERRIDING SYSTEM VALUE`` would defeat an identity column; a
  trigger is not defeated by anything short of the owner disabling it). The column default goes, so
  each row draws one id. The statement-level ``audit_events_writer_lock`` trigger (0006) still fires
  first, before any id is drawn, as the sealer's horizon needs.
- ``audit_chain`` is written only through ``audit_chain_append``, a SECURITY DEFINER function owned by
  the owner role; the application role has EXECUTE on it and no INSERT on the table. The function
  accepts only a sound extension of the chain: entries numbered on from the head, each linking to the
  one before with the hash recomputed here, over events that exist, in id order, skipping none, and
  never past the last id the sequence handed out. What it cannot check is the content digest (that
  needs the canonical JSON, ``engine/audit_chain.py``): a compromised application role could seal a
  wrong digest, which ``caremsg audit verify`` then reports as an edited record; it cannot hide one.

``idempotency_keys.lease_until``: an in-progress key is held by a lease the request renews while it
runs (``integrations/idempotency.py``), so a key whose request died is free again within seconds.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEAL_LOCK = 0x636D6173  # integrations/audit_sealer.py: the same key
APPEND_ARGS = "bigint[], bigint[], text[], text[], text[]"


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION audit_events_assign_id() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.id := nextval('audit_events_id_seq');
            RETURN NEW;
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_assign_id BEFORE INSERT ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION audit_events_assign_id()"
    )
    op.execute("ALTER TABLE audit_events ALTER COLUMN id DROP DEFAULT")

    op.execute(
        f"""
        CREATE FUNCTION audit_chain_append(
            p_seq bigint[], p_event_id bigint[], p_digest text[], p_prev_hash text[], p_hash text[]
        ) RETURNS integer
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            n integer := coalesce(cardinality(p_seq), 0);
            head_seq bigint := 0;
            head_hash text := repeat('0', 64);
            head_event bigint := 0;
            assigned bigint;
            present bigint;
        BEGIN
            IF n = 0 THEN
                RETURN 0;
            END IF;
            IF cardinality(p_event_id) <> n OR cardinality(p_digest) <> n
               OR cardinality(p_prev_hash) <> n OR cardinality(p_hash) <> n THEN
                RAISE EXCEPTION 'audit_chain_append: arrays of different lengths'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM pg_advisory_xact_lock({SEAL_LOCK});
            SELECT c.seq, c.hash, c.event_id INTO head_seq, head_hash, head_event
                FROM audit_chain c ORDER BY c.seq DESC LIMIT 1;
            IF NOT FOUND THEN
                head_seq := 0; head_hash := repeat('0', 64); head_event := 0;
            END IF;
            SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO assigned
                FROM audit_events_id_seq s;
            IF EXISTS (
                SELECT 1
                FROM unnest(p_seq, p_event_id, p_digest, p_prev_hash, p_hash)
                     WITH ORDINALITY AS x(seq, event_id, digest, prev_hash, hash, i)
                WHERE x.seq IS DISTINCT FROM head_seq + x.i
                   OR x.digest IS NULL OR x.digest !~ '^[0-9a-f]{{64}}$'
                   OR x.prev_hash IS DISTINCT FROM
                        CASE WHEN x.i = 1 THEN head_hash ELSE p_hash[x.i - 1] END
                   OR x.hash IS DISTINCT FROM encode(sha256(convert_to(format(
                        '{{"digest":"%s","event_id":%s,"prev":"%s","seq":%s}}',
                        x.digest, x.event_id, x.prev_hash, x.seq), 'UTF8')), 'hex')
                   OR x.event_id IS NULL
                   OR x.event_id <= CASE WHEN x.i = 1 THEN head_event ELSE p_event_id[x.i - 1] END
                   OR x.event_id > assigned
            ) THEN
                RAISE EXCEPTION 'audit_chain_append: not a sound extension of the chain'
                    USING ERRCODE = 'check_violation';
            END IF;
            -- Every event between the head and the batch's last, and only those: none skipped.
            SELECT count(*) INTO present FROM audit_events e
                WHERE e.id > head_event AND e.id <= p_event_id[n];
            IF present <> n
               OR (SELECT count(*) FROM audit_events e WHERE e.id = ANY (p_event_id)) <> n THEN
                RAISE EXCEPTION 'audit_chain_append: the batch is not the next events in id order'
                    USING ERRCODE = 'check_violation';
            END IF;
            INSERT INTO audit_chain (seq, event_id, digest, prev_hash, hash)
                SELECT * FROM unnest(p_seq, p_event_id, p_digest, p_prev_hash, p_hash);
            RETURN n;
        END;
        $$
        """
    )
    op.execute(f"REVOKE EXECUTE ON FUNCTION audit_chain_append({APPEND_ARGS}) FROM PUBLIC")

    op.add_column(
        "idempotency_keys",
        sa.Column("lease_until", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("idempotency_keys", "lease_until")
    op.execute(f"DROP FUNCTION audit_chain_append({APPEND_ARGS})")
    op.execute("ALTER TABLE audit_events ALTER COLUMN id SET DEFAULT nextval('audit_events_id_seq')")
    op.execute("DROP TRIGGER audit_events_assign_id ON audit_events")
    op.execute("DROP FUNCTION audit_events_assign_id()")
