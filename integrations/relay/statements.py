"""The relay's SQL: claim, settle, give back, renew. No statement spells an effect's kind: the kinds
a statement needs arrive as bind parameters, derived from the effect types (engine/effects.py).

A claim leases, for the kinds that keep their order (posts, files, texts), a conversation's earliest
pending entries as a contiguous prefix: an entry only with every earlier pending entry of its kind
and conversation leased by the same claim. It is up to three statements, run by :func:`claim` in one
transaction, none of which walks a backlog:

1. the heads, as the claim always leased them: :data:`CLAIM` walks the earliest pending entries only,
   and when it cannot fill a batch there, :data:`CLAIM_HEADS` takes the rest from the first pending
   entry of each conversation. Each conversation with something claimable gets its first entry
   before any gets a second, so a long backlog of one conversation never keeps another waiting;
2. when the batch still has room, :data:`CLAIM_LATER` fills it with the next entries of the
   conversations whose head was just leased, round-robin (every such conversation's second entry,
   then every third, ...), each conversation's run ending at the first entry it may not take
   (one not claimable, or one another relay's claim holds), and after :data:`CLAIM_RUN` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import IN_ORDER, CreateChannel, kind_of, kinds
from engine.errors import ChatCredentialsRejected
from integrations.db.messaging import PENDING_CTE
from integrations.db.uow import audit_insert_sql, audit_object_sql

#: :data:`CLAIM` walks this many batches' worth of the earliest pending entries: enough to fill a
#: batch when conversations are many (or several relays hold the first entries), few enough to stay
#: cheap in front of a long backlog of one conversation.
CLAIM_WINDOW_BATCHES = 4

#: At most this many of a conversation's entries behind its head in one claim. A relay claims again
#: only once its batch is delivered, and a conversation's entries go out one after the other, a wave
#: each: a run of 20 would hold every other conversation's new entries for 20 posts in turn (with
#: Sendbird's ~0.1-0.3 s per call, seconds; an urgent message too). A batch of heads alone takes
#: ``batch_size / concurrency`` waves (3 by default); a run of 3 behind its head takes 4. Draining
#: one conversation, the claim's statements are shared by 4 messages instead of 1.
CLAIM_RUN = 3

# A candidate (``o``, with its conversation ``c`` left-joined) is claimed when it is due, no relay
# holds it, its conversation's channel exists (everything about a conversation waits for that, but
# creating it) and it is of the kinds asked for. Which entries are candidates keeps the order (see
# each claim): a conversation's messages are posted, and its texts sent, in the order they were
# accepted, even after an outage (retries with jitter would shuffle them), so an entry of those
# kinds is leased only together with every earlier pending one of its kind and conversation.
_CLAIMABLE = """
          o.status = 'pending' AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until < now())
          AND (o.kind = :creates_channel OR o.conversation_id IS NULL OR c.channel_state = 'ready')
          AND (CAST(:only AS text[]) IS NULL OR o.kind = ANY(CAST(:only AS text[])))
          AND NOT o.kind = ANY(CAST(:except AS text[]))"""

#: Of the ``candidates`` (ids), the earliest ``:limit`` claimable ones, locked (another relay's are skipped).
_PICKED = f"""
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.id = ANY(ARRAY(SELECT id FROM candidates)) AND {_CLAIMABLE}
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED"""  # noqa: S608 - assembled from constants

_LEASE = "lease_until = now() + make_interval(secs => :lease), attempts = attempts + 1"
_RETURNED = "id, kind, payload, attempts, conversation_id, message_id"

#: Leases the earliest claimable entries (at most ``:limit``) in id order, FOR UPDATE SKIP LOCKED,
#: among the first ``:window`` pending entries only. Every pending entry earlier than one in the
#: window is in the window too, so whether an entry is the first pending one of its kind and
#: conversation is read off the window itself, with no probe per entry. When conversations are many,
#: their first entries come early in id order and the window fills the batch; behind a long backlog
#: of one conversation it costs the window, not the backlog (walking the backlog, each entry probed
#: for an earlier one, made draining N entries cost N² rows read).
#:
#: Besides the claimed rows it answers ONE row of NULLs when the window ended before the batch was
#: full and more entries are pending beyond it: :func:`claim` then fills the batch with
#: :data:`CLAIM_HEADS`, in the same transaction.
CLAIM = text(
    f"""
    WITH earliest AS (
        SELECT id, kind, conversation_id FROM outbox WHERE status = 'pending' ORDER BY id LIMIT :window
    ), candidates AS (
        SELECT id FROM (
            SELECT id, kind, conversation_id,
                   row_number() OVER (PARTITION BY kind, conversation_id ORDER BY id) AS nth
            FROM earliest) w
        WHERE nth = 1 OR conversation_id IS NULL OR NOT kind = ANY(CAST(:in_order AS text[]))
    ), picked AS ({_PICKED}
    ), claimed AS (
        UPDATE outbox SET {_LEASE} WHERE id IN (SELECT id FROM picked) RETURNING {_RETURNED}
    )
    SELECT {_RETURNED} FROM claimed
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL
    WHERE (SELECT count(*) FROM picked) < :limit AND (SELECT count(*) FROM earliest) = :window
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

#: The same claim over every pending entry, at a cost that grows with what can be claimed, not with
#: the backlog. The candidates: the first pending entry of each (kind, conversation), found by
#: skipping through ix_outbox_pending_in_order (kind, conversation_id, id) from one (kind,
#: conversation) to the next, one index descent each (a "loose index scan"); and every later entry
#: of a kind that keeps no order, or of no conversation. Of those it leases the earliest ``:limit``
#: claimable in id order, FOR UPDATE SKIP LOCKED, as :data:`CLAIM` does; entries :data:`CLAIM` just
#: leased in the same transaction are held, so not claimable again.
CLAIM_HEADS = text(
    f"""
    WITH RECURSIVE firsts(kind, conversation_id, id) AS (
        (SELECT kind, conversation_id, id FROM outbox WHERE status = 'pending'
         ORDER BY kind, conversation_id, id LIMIT 1)
        UNION ALL
        SELECT n.kind, n.conversation_id, n.id FROM firsts f CROSS JOIN LATERAL (
            (SELECT kind, conversation_id, id FROM outbox
             WHERE status = 'pending' AND kind = f.kind AND conversation_id > f.conversation_id
             ORDER BY kind, conversation_id, id LIMIT 1)
            UNION ALL
            -- a kind's entries of no conversation come last in the index (NULLS LAST)
            (SELECT kind, conversation_id, id FROM outbox
             WHERE status = 'pending' AND kind = f.kind AND conversation_id IS NULL
               AND f.conversation_id IS NOT NULL
             ORDER BY kind, conversation_id, id LIMIT 1)
            UNION ALL
            (SELECT kind, conversation_id, id FROM outbox
             WHERE status = 'pending' AND kind > f.kind
             ORDER BY kind, conversation_id, id LIMIT 1)
            LIMIT 1) n
    ), wanted AS (
        SELECT * FROM firsts
        WHERE (CAST(:only AS text[]) IS NULL OR kind = ANY(CAST(:only AS text[])))
          AND NOT kind = ANY(CAST(:except AS text[]))
    ), candidates AS (
        SELECT id FROM wanted
        UNION ALL
        SELECT r.id FROM wanted f CROSS JOIN LATERAL (
            -- the later entries of a kind that keeps no order
            (SELECT id FROM outbox
             WHERE status = 'pending' AND kind = f.kind AND conversation_id = f.conversation_id
               AND id > f.id AND NOT f.kind = ANY(CAST(:in_order AS text[])))
            UNION ALL
            -- the later entries of no conversation
            (SELECT id FROM outbox
             WHERE status = 'pending' AND kind = f.kind AND conversation_id IS NULL
               AND id > f.id AND f.conversation_id IS NULL)) r
    ), picked AS ({_PICKED}
    )
    UPDATE outbox SET {_LEASE} WHERE id IN (SELECT id FROM picked) RETURNING {_RETURNED}
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


#: The next entries of the conversations whose first pending entry (of a kind that keeps its order)
#: this claim has just leased (``:heads``: the ids :data:`CLAIM` and :data:`CLAIM_HEADS` leased), at
#: most ``:limit`` in all. The candidates are each head's next pending entries of its kind and
#: conversation, at most ``:run`` each (:data:`CLAIM_RUN`), read through ix_outbox_pending_in_order:
#: the queue behind the head, never the backlog behind that. The claimable ones are locked FOR
#: UPDATE SKIP LOCKED, and a conversation's run ends at the first candidate not locked (not
#: claimable, or another relay's claim holds it): an entry is leased only when every earlier pending
#: entry of its kind and conversation is leased by this claim. Of the runs, the batch takes every
#: conversation's second entry first, then every third, ... (ties in id order): conversations share
#: the room evenly and a wave (one entry of each) stays full. Candidates locked past the end of a
#: run stay locked, not leased, until the claim commits; another relay could not have taken them
#: either.
CLAIM_LATER = text(
    f"""
    WITH heads AS (
        SELECT id, kind, conversation_id FROM outbox
        WHERE id = ANY(CAST(:heads AS integer[])) AND status = 'pending'
          AND conversation_id IS NOT NULL AND kind = ANY(CAST(:in_order AS text[]))
    ), later AS (
        SELECT l.id, h.id AS head, row_number() OVER (PARTITION BY h.id ORDER BY l.id) AS nth
        FROM heads h CROSS JOIN LATERAL (
            -- its kind and conversation, after it: spelt as a range of ix_outbox_pending_in_order
            -- (with "conversation_id = ..." the planner may read the whole conversation through
            -- the index on conversation_id, and sort it)
            SELECT id FROM outbox
            WHERE status = 'pending'
              AND (kind, conversation_id, id) > (h.kind, h.conversation_id, h.id)
              AND (kind, conversation_id) <= (h.kind, h.conversation_id)
            ORDER BY kind, conversation_id, id
            LIMIT :run) l
    ), locked AS (
        SELECT o.id FROM outbox o LEFT JOIN conversations c ON c.id = o.conversation_id
        WHERE o.id = ANY(ARRAY(SELECT id FROM later)) AND {_CLAIMABLE}
        FOR UPDATE OF o SKIP LOCKED
    ), picked AS (
        SELECT id FROM (
            SELECT later.id, later.nth,
                   bool_and(locked.id IS NOT NULL) OVER (PARTITION BY later.head ORDER BY later.nth) AS run
            FROM later LEFT JOIN locked ON locked.id = later.id) r
        WHERE run
        ORDER BY nth, id
        LIMIT :limit
    )
    -- (not "IN (SELECT ...)": planned as a hash join, that reads the whole pending outbox)
    UPDATE outbox SET {_LEASE} WHERE id = ANY(ARRAY(SELECT id FROM picked)) RETURNING {_RETURNED}
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


def claim_parameters(
    *,
    lease: float,
    limit: int,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    run: int = CLAIM_RUN,
) -> dict[str, Any]:
    """The bind parameters of :data:`CLAIM` (and :data:`CLAIM_HEADS`, :data:`CLAIM_LATER`): a batch of
    ``limit`` leased for ``lease`` seconds, of the stored kinds ``only`` (None: every kind) and none of
    ``skip``, with at most ``run`` of a conversation's entries behind its head."""
    return {
        "lease": lease,
        "limit": limit,
        "run": run,
        "window": CLAIM_WINDOW_BATCHES * limit,
        "creates_channel": kind_of(CreateChannel),
        "in_order": list(kinds(IN_ORDER)),
        "only": list(only) if only else None,
        "except": list(skip),
    }


async def claim(session: AsyncSession, parameters: dict[str, Any]) -> list[Row[Any]]:
    """Lease the earliest claimable entries, at most ``parameters["limit"]``, in the session's
    transaction: the heads (the rows :data:`CLAIM` leases, then, when it says more lies beyond its
    window, what :data:`CLAIM_HEADS` leases to fill the batch), then, while the batch has room, what
    :data:`CLAIM_LATER` leases behind the heads of the ordered kinds (in id order each; the caller
    sorts). Each statement reads its own snapshot, so they lease what claims in a row would, but
    that a later entry is leased only with the head leased just before it."""
    answered = (await session.execute(CLAIM, parameters)).all()
    rows = [r for r in answered if r.id is not None]
    if len(rows) < len(answered):
        rest = {**parameters, "limit": parameters["limit"] - len(rows)}
        rows += (await session.execute(CLAIM_HEADS, rest)).all()
    room = parameters["limit"] - len(rows)
    in_order = set(parameters["in_order"])
    if room > 0 and any(r.conversation_id is not None and r.kind in in_order for r in rows):
        later = {**parameters, "limit": room, "heads": [r.id for r in rows]}
        rows += (await session.execute(CLAIM_LATER, later)).all()
    return rows


# One statement settles a wave: the outbox rows (finished, cancelled, rescheduled, or given back
# untried) and, for each entry it finishes or cancels, its audit record. Only rows this relay still
# holds are touched: still pending, with the attempt count of this relay's claim (a later claim
# elsewhere has counted one more). Settling the same outcomes twice (a commit whose answer was
# lost) therefore changes nothing the second time. The relay acts for the system: audit records have
# no actor. Ids come back so the executors record only what was settled here.
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
         WHERE t.outcome IN ('done', 'failed', 'cancelled'))"""  # noqa: S608 - constants; values bound
)

#: Outcome codes of :data:`SETTLE` (``outcomes``): done, failed (dead), cancelled (found recalled right
#: before it was done: the row as a recall's cancel leaves it, :data:`integrations.db.recalls.CANCEL`),
#: retry, untried (given back).
SETTLE = text(
    f"""
    WITH {PENDING_CTE}, s AS (
        SELECT * FROM unnest(
            CAST(:ids AS integer[]), CAST(:attempts AS integer[]), CAST(:outcomes AS text[]),
            CAST(:reasons AS text[]), CAST(:delays AS double precision[])
        ) AS s(id, attempts, outcome, reason, delay)
    ), settled AS (
        UPDATE outbox o SET
            status = CASE WHEN s.outcome IN ('done', 'failed', 'cancelled') THEN s.outcome ELSE 'pending' END,
            lease_until = NULL,
            last_error = CASE WHEN s.outcome = 'untried' THEN o.last_error ELSE s.reason END,
            done_at = CASE WHEN s.outcome IN ('done', 'cancelled') THEN now() END,
            next_attempt_at = CASE WHEN s.outcome = 'retry'
                THEN now() + make_interval(secs => s.delay) ELSE o.next_attempt_at END,
            -- given back untried, or cancelled (found recalled before any request): the claim
            -- counted an attempt that made no request, so attempts stays the requests made, which
            -- a recall reads (integrations/effects/recalls.py: one may have been taken unanswered)
            attempts = CASE WHEN s.outcome IN ('untried', 'cancelled') THEN o.attempts - 1 ELSE o.attempts END
        FROM s, pending p  -- integrations/db/messaging.py, PENDING_CTE, says why not 'pending'
        WHERE o.id = s.id AND o.status = p.status AND o.attempts = s.attempts
        RETURNING o.id, o.kind, o.attempts, o.conversation_id, o.message_id, s.outcome, s.reason
    ), audited AS (
        {_DELIVERY_AUDIT}
    )
    SELECT id FROM settled
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

RELEASE = text(
    f"""
    WITH {PENDING_CTE}
    UPDATE outbox o SET lease_until = NULL
    FROM unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts), pending p
    WHERE o.id = s.id AND o.status = p.status AND o.attempts = s.attempts
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

# The relay's heartbeat: entries it still holds keep their lease while it lives (rows it settled
# meanwhile have no lease left to renew). SKIP LOCKED: a row being settled right now needs no
# renewal, and the heartbeat never waits on a settle, so the two cannot deadlock.
RENEW = text(
    f"""
    WITH {PENDING_CTE}
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT o.id FROM outbox o
        JOIN unnest(CAST(:ids AS integer[]), CAST(:attempts AS integer[])) AS s(id, attempts)
          ON o.id = s.id AND o.attempts = s.attempts
        JOIN pending p ON o.status = p.status
        WHERE o.lease_until IS NOT NULL
        FOR UPDATE OF o SKIP LOCKED)
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


#: The entries an earlier run held because the provider refused caremsg's credentials, due now: a
#: relay starts after a restart, and a restart is how corrected credentials take effect, so they go
#: out at once rather than at their backoff's next step (up to ``outbox.max_backoff``). Of the kinds
#: asked for (``claim_parameters``' ``only`` and ``except``).
DUE_AFTER_CREDENTIALS = text(
    f"""
    WITH {PENDING_CTE}
    UPDATE outbox o SET next_attempt_at = now()
    FROM pending p
    WHERE o.status = p.status AND o.last_error = :refused AND o.next_attempt_at > now()
      AND (CAST(:only AS text[]) IS NULL OR o.kind = ANY(CAST(:only AS text[])))
      AND NOT o.kind = ANY(CAST(:except AS text[]))
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


async def due_after_credentials(
    session: AsyncSession, only: Sequence[str] | None, skip: Sequence[str]
) -> None:
    """:data:`DUE_AFTER_CREDENTIALS` for the kinds ``only`` (None: every kind) and none of ``skip``."""
    values = {"only": list(only) if only else None, "except": list(skip)}
    await session.execute(DUE_AFTER_CREDENTIALS, {**values, "refused": ChatCredentialsRejected.code})
