"""The relay's claim as it was, kept as the specification the claim is held to, and a count of what a
statement reads: used by tests/integration/test_relay_claim.py and by bench/relay.py and
bench/relay_claim.py, which measure the two side by side."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

#: The claim before it skipped conversations' backlogs (``CLAIM`` in integrations/relay/statements.py
#: at 0b7e917): one statement walking the pending entries in id order, probing each for an earlier
#: one of its kind and conversation, until its batch is full. What it leases is what the claim must
#: lease; what it costs behind a backlog of one conversation is what the claim no longer costs.
WALKING_CLAIM = text(
    """
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1
    WHERE id IN (
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until < now())
          AND (o.kind = :creates_channel OR o.conversation_id IS NULL OR c.channel_state = 'ready')
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


def outbox_rows_read(plan: dict[str, Any]) -> int:
    """Rows an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan's nodes read from ``outbox``: returned or
    filtered out, times their loops (a count that does not depend on the machine's speed)."""
    own = 0
    if plan.get("Relation Name") == "outbox":
        kept = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        own = (kept + plan.get("Rows Removed by Index Recheck", 0)) * plan.get("Actual Loops", 1)
    return int(own) + sum(outbox_rows_read(child) for child in plan.get("Plans", []))
