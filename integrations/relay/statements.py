"""The relay's SQL: claim, settle, give back, renew. No statement spells an effect's kind: the kinds
a statement needs arrive as bind parameters, derived from the effect types (engine/effects.py)."""

from __future__ import annotations

from sqlalchemy import text

from integrations.db.uow import audit_insert_sql, audit_object_sql

CLAIM = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until < now())
          -- everything about a conversation waits until its channel exists
          AND (o.kind = :creates_channel OR o.conversation_id IS NULL OR c.channel_state = 'ready')
          -- a conversation's messages are posted, and its texts sent, in the order they were
          -- accepted, even after an outage (retries with jitter would shuffle them): each waits for
          -- the earlier ones of its kind (ix_outbox_pending_in_order answers this probe)
          AND (o.conversation_id IS NULL OR NOT o.kind = ANY(CAST(:in_order AS text[])) OR NOT EXISTS (
                SELECT 1 FROM outbox e WHERE e.status = 'pending' AND e.kind = o.kind
                  AND e.conversation_id = o.conversation_id AND e.id < o.id))
          AND (CAST(:only AS text[]) IS NULL OR o.kind = ANY(CAST(:only AS text[])))
          AND NOT o.kind = ANY(CAST(:except AS text[]))
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED)
    RETURNING id, kind, payload, attempts, conversation_id, message_id
    """
)

# One statement settles a wave: the outbox rows (finished, rescheduled, or given back untried) and,
# for each entry it finishes, its audit record. Only rows this relay still holds are touched: still
# pending, with the attempt count of this relay's claim (a later claim elsewhere has counted one
# more). Settling the same outcomes twice (a commit whose answer was lost) therefore changes nothing
# the second time. The relay acts for the system: audit records have no actor. Ids come back so the
# executors record only what was settled here.
# The relay's audit records, in the one column list every audit insert uses (integrations/db/uow.py).
_DELIVERY_EVENT = audit_object_sql(
    event="'delivery'",
    workflow="'delivery.' || t.kind",
    outcome="CASE WHEN t.outcome = 'done' THEN 'success' ELSE 'failure' END",
    resource_type="CASE WHEN t.message_id IS NOT NULL THEN 'message' ELSE 'conversation' END",
    resource_id="CAST(COALESCE(t.message_id, t.conversation_id) AS text)",
    patient_id="c.patient_id",
    reason="COALESCE(t.reason, 'delivered')",
    details="jsonb_build_object('outbox_id', t.id, 'attempts', t.attempts)",
)
_DELIVERY_AUDIT = audit_insert_sql(
    f"""(SELECT coalesce(jsonb_agg({_DELIVERY_EVENT} ORDER BY t.id), '[]'::jsonb)
         FROM settled t LEFT JOIN conversations c ON c.id = t.conversation_id
         WHERE t.outcome IN ('done', 'failed'))"""  # noqa: S608 - constants; every value is bound
)

#: Outcome codes of :data:`SETTLE` (``outcomes``): done, failed (dead), retry, untried (given back).
SETTLE = text(
    f"""
    WITH s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:attempts AS integer[]), CAST(:outcomes AS text[]),
            CAST(:reasons AS text[]), CAST(:delays AS double precision[])
        ) AS s(id, attempts, outcome, reason, delay)
    ), settled AS (
        UPDATE outbox o SET
            status = CASE WHEN s.outcome IN ('done', 'failed') THEN s.outcome ELSE 'pending' END,
            lease_until = NULL,
            last_error = CASE WHEN s.outcome = 'untried' THEN o.last_error ELSE s.reason END,
            done_at = CASE WHEN s.outcome = 'done' THEN now() END,
            next_attempt_at = CASE WHEN s.outcome = 'retry'
                THEN now() + make_interval(secs => s.delay) ELSE o.next_attempt_at END,
            -- given back untried: the claim counted an attempt that was never made
            attempts = CASE WHEN s.outcome = 'untried' THEN o.attempts - 1 ELSE o.attempts END
        FROM s
        WHERE o.id = s.id AND o.status = 'pending' AND o.attempts = s.attempts
        RETURNING o.id, o.kind, o.attempts, o.conversation_id, o.message_id, s.outcome, s.reason
    ), audited AS (
        {_DELIVERY_AUDIT}
    )
    SELECT id FROM settled
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

RELEASE = text(
    """
    UPDATE outbox o SET lease_until = NULL
    FROM unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts)
    WHERE o.id = s.id AND o.status = 'pending' AND o.attempts = s.attempts
    """
)

# The relay's heartbeat: entries it still holds keep their lease while it lives (rows it settled
# meanwhile have no lease left to renew). SKIP LOCKED: a row being settled right now needs no
# renewal, and the heartbeat never waits on a settle, so the two cannot deadlock.
RENEW = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT o.id FROM outbox o
        JOIN unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts)
          ON o.id = s.id AND o.attempts = s.attempts
        WHERE o.status = 'pending' AND o.lease_until IS NOT NULL
        FOR UPDATE OF o SKIP LOCKED)
    """
)
