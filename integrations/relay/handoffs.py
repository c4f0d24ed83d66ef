"""The on-call hand-off scheduler: when a care team's shift begins or ends, every conversation that
includes the team's on-call role changes hands.

Each round, in one transaction, it finds the conversations whose recorded holder (the one in the
chat channel, ``conversation_on_call.holder_id``) is not who is on call now (the latest-starting
shift of the team holding now, its member active; else nobody), moves the holder, enqueues the
typed effects the hand-off asks for (:func:`engine.rosters.handoff_effects`: the new holder invited
into the channel, the old one removed unless a member in their own right) and writes one audit
record per hand-off (``on_call.handoff``: the conversation, its patient, the care team, who held it,
who holds it now and by which shift). The relay then performs the effects like any other.

Safe with several instances: the rows are claimed ``FOR UPDATE SKIP LOCKED`` (a conversation being
handed off by one instance is skipped by the others), and the holder only moves from the value
read, so a hand-off is made once. A round that fails (the database away) is tried again at the next
poll; nothing is half done because everything happens in the one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.audit import AuditEvent
from engine.rosters import Handoff, handoff_effects
from engine.services import utc_now
from integrations.db.messaging import SqlOutbox
from integrations.db.rosters import on_call_shift_sql
from integrations.db.uow import PostgresAuditSink, audit_row, emit_audit_log

log = structlog.get_logger("caremsg.relay")

#: The conversations whose on-call holder is not who is on call at ``:at``, claimed for this round.
DUE = text(
    f"""
    SELECT r.conversation_id, r.care_team_id, c.patient_id, r.holder_id AS from_user_id,
           CASE WHEN tu.is_active THEN h.user_id END AS to_user_id,
           CASE WHEN tu.is_active THEN h.id END AS shift_id,
           fu.chat_user_id AS from_chat_id, tu.chat_user_id AS to_chat_id,
           EXISTS (SELECT 1 FROM conversation_members m
                   WHERE m.conversation_id = r.conversation_id AND m.user_id = r.holder_id) AS from_is_member
    FROM conversation_on_call r
    JOIN conversations c ON c.id = r.conversation_id
    LEFT JOIN LATERAL ({on_call_shift_sql("r.care_team_id", "at")}) h ON true
    LEFT JOIN users tu ON tu.id = h.user_id
    LEFT JOIN users fu ON fu.id = r.holder_id
    WHERE (CASE WHEN tu.is_active THEN h.user_id END) IS DISTINCT FROM r.holder_id
    ORDER BY r.conversation_id
    LIMIT :limit
    FOR UPDATE OF r SKIP LOCKED
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

MOVE = text(
    """
    UPDATE conversation_on_call SET holder_id = CAST(:to_user_id AS integer), holder_since = :at
    WHERE conversation_id = :conversation_id AND holder_id IS NOT DISTINCT FROM CAST(:from_user_id AS integer)
    """
)


def handoff_event(handoff: Handoff, at: datetime) -> AuditEvent:
    """The audit record of one hand-off: who received the conversation's messages from now on, and
    why (on call for the care team, by which shift), and who stopped receiving them."""
    reason = "shift_started" if handoff.to_user_id is not None else "nobody_on_call"
    return AuditEvent(
        event="handoff",
        workflow="on_call.handoff",
        outcome="success",
        occurred_at=at,
        resource_type="conversation",
        resource_id=str(handoff.conversation_id),
        patient_id=handoff.patient_id,
        reason=reason,
        details={
            "care_team_id": handoff.care_team_id,
            "from_user_id": handoff.from_user_id,
            "to_user_id": handoff.to_user_id,
            "shift_id": handoff.shift_id,
            "received_as": f"on call for care team {handoff.care_team_id}",
            "from_stays_member": handoff.from_is_member,
        },
    )


class OnCallHandoffs:
    """Hands conversations' on-call roles over at shift boundaries (see the module docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = wake

    async def run_once(self) -> list[Handoff]:
        """One round: every due hand-off (up to the batch size), in one transaction; returns them."""
        at = self._clock()
        done: list[Handoff] = []
        events: list[AuditEvent] = []
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(DUE, {"at": at, "limit": self._batch_size})).all()
            outbox = SqlOutbox(session)
            for r in rows:
                handoff = Handoff(
                    conversation_id=r.conversation_id,
                    care_team_id=r.care_team_id,
                    patient_id=r.patient_id,
                    from_user_id=r.from_user_id,
                    to_user_id=r.to_user_id,
                    shift_id=r.shift_id,
                    from_chat_id=r.from_chat_id,
                    to_chat_id=r.to_chat_id if r.to_user_id is not None else None,
                    from_is_member=bool(r.from_is_member),
                )
                moved = await session.execute(
                    MOVE,
                    {
                        "to_user_id": handoff.to_user_id,
                        "at": at,
                        "conversation_id": handoff.conversation_id,
                        "from_user_id": handoff.from_user_id,
                    },
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another instance moved it since it was read
                for effect in handoff_effects(handoff):
                    await outbox.enqueue(effect)
                events.append(handoff_event(handoff, at))
                done.append(handoff)
            if events:
                await PostgresAuditSink().write(session, [audit_row(e) for e in events])
        if done:
            emit_audit_log(events)
            log.info("rosters.handoffs", count=len(done))
            self._wake()
        return done

    async def run(self) -> None:
        """Hand off until cancelled; a failed round (the database away) is logged and tried again."""
        while True:
            try:
                handed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rosters.handoff_round_failed", error=type(exc).__name__)
                handed = []
            if len(handed) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.sleep(self._poll_interval)
