"""The escalation scheduler: takes the due steps of unacknowledged urgent messages, each exactly once.

Longer than 400 lines because one round is one transaction whose statements (claim, whom to alert,
record) are read together: each reads what the one before it left.

It runs in every service process beside the outbox relay (``handlers/app.py``), and any number of
them may run at once. One *round* is one transaction:

1. **claim**: the urgent messages whose ``escalation_due_at`` has come (the clock port's time, so
   tests move a fake clock), not acknowledged, ``FOR UPDATE OF m SKIP LOCKED``, at most
   ``batch_size``: a message being worked on by one scheduler is skipped by the others, and an
   acknowledgement waits for the round that holds its message (then stops every later step);
2. **decide**: which steps are due (engine/escalation.py, the schedule of policies/escalation.toml),
   whom each alerts (the unread members, someone away replaced by their delegate, the care team's
   on-call member, the organization's admins) and, per person, ``message.escalate``
   (engine/workflows/urgent.py);
3. **record**: each step into ``escalation_steps`` (unique per message, step and round: ``ON
   CONFLICT DO NOTHING``, a second line of defence), its outbox entry, the members it adds to the
   conversation (the on-call member, a delegate), every decision's audit record and the step's own
   (``escalation_step``), and the message's next ``escalation_due_at`` — all in the claim's
   transaction, so a scheduler killed mid-round leaves nothing half-done and its messages are
   claimed again by the next round anywhere.

State lives in PostgreSQL only, so a restart resumes where the last committed round ended; a round
missed while no scheduler ran is not made up (the latest re-alert round due is taken, once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.audit import AuditEvent
from engine.consent_index import ConsentIndex
from engine.effects import Effect, EscalateUrgent, RealertUrgent, TextUrgentAlert
from engine.escalation import ESCALATE, DueStep, Step, Taken, due_steps, next_due
from engine.facts import ConsentNeed, millis
from engine.policy import Policy
from engine.services import utc_now
from engine.workflows.urgent import Candidate, decide_targets
from integrations.db.reads import unread_sql
from integrations.db.rosters import delegate_at_sql, on_call_shift_sql
from integrations.db.uow import audit_insert_sql, audit_json, emit_audit_log
from integrations.effects.outbox import outbox_row

log = structlog.get_logger("caremsg.escalation")

_CLAIM = text(
    """
    SELECT m.id, m.conversation_id, m.sender_id, m.created_at, c.patient_id,
           p.organization_id AS patient_organization_id
    FROM messages m JOIN conversations c ON c.id = m.conversation_id JOIN patients p ON p.id = c.patient_id
    WHERE m.escalation_due_at <= :now AND m.acknowledged_at IS NULL
    ORDER BY m.escalation_due_at
    LIMIT :limit
    FOR UPDATE OF m SKIP LOCKED
    """
)

_TAKEN = text(
    "SELECT message_id, step, max(round) AS last_round FROM escalation_steps"
    " WHERE message_id = ANY(CAST(:ids AS integer[])) GROUP BY message_id, step"
)

# Active members who have not read the message (engine.model.has_read).
_UNREAD = text(
    f"""
    SELECT m.id AS message_id, cm.user_id
    FROM messages m JOIN conversation_members cm ON cm.conversation_id = m.conversation_id
    JOIN users u ON u.id = cm.user_id AND u.is_active
    WHERE m.id = ANY(CAST(:ids AS integer[]))
      AND {unread_sql("m.id", "m.sender_id", "m.conversation_id", "cm.user_id")}
    ORDER BY m.id, cm.user_id
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

# The care team's on-call member now: the shift covering now that started latest.
_ON_CALL = text(
    f"""
    SELECT m.id AS message_id, s.user_id
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    JOIN care_teams t ON t.patient_id = c.patient_id
    JOIN LATERAL ({on_call_shift_sql("t.id", "now")}) s ON true
    WHERE m.id = ANY(CAST(:ids AS integer[]))
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

_ADMINS = text(
    "SELECT organization_id, id AS user_id FROM users WHERE role = 'admin' AND is_active"
    " AND organization_id = ANY(CAST(:orgs AS integer[])) ORDER BY id"
)

# Whom someone away has named to take their urgent messages now (engine.rosters.delegate_at).
_DELEGATES = text(
    f"""
    SELECT p.user_id, d.delegate_id
    FROM unnest(CAST(:ids AS integer[])) AS p(user_id)
    JOIN LATERAL ({delegate_at_sql("p.user_id", "now")}) d ON true
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)

# What a decision about each (message, person) needs: role, organization, member, on the care team.
_PEOPLE = text(
    """
    SELECT x.message_id, u.id AS user_id, u.role, u.organization_id,
           EXISTS (SELECT 1 FROM conversation_members cm
                   WHERE cm.conversation_id = m.conversation_id AND cm.user_id = u.id) AS is_member,
           EXISTS (SELECT 1 FROM care_teams t JOIN care_team_members tm ON tm.care_team_id = t.id
                   WHERE t.patient_id = c.patient_id AND tm.user_id = u.id) AS on_care_team
    FROM unnest(CAST(:message_ids AS integer[]), CAST(:user_ids AS integer[])) AS x(message_id, user_id)
    JOIN users u ON u.id = x.user_id AND u.is_active
    JOIN messages m ON m.id = x.message_id JOIN conversations c ON c.id = m.conversation_id
    """
)

_INSERT_STEPS = text(
    """
    INSERT INTO escalation_steps (message_id, step, round, due_at, taken_at, target_user_ids, state)
    SELECT s.message_id, s.step, s.round, s.due_at, :now,
           ARRAY(SELECT jsonb_array_elements_text(s.targets)::integer), s.state
    FROM jsonb_to_recordset(CAST(:steps AS jsonb))
        AS s(message_id integer, step text, round integer, due_at timestamptz, targets jsonb, state text)
    ON CONFLICT (message_id, step, round) DO NOTHING
    RETURNING id, message_id, step, round
    """
)

_INSERT_OUTBOX = text(
    """
    INSERT INTO outbox (kind, payload, conversation_id, message_id)
    SELECT e.kind, e.payload, e.conversation_id, e.message_id
    FROM jsonb_to_recordset(CAST(:entries AS jsonb))
        AS e(kind text, payload jsonb, conversation_id integer, message_id integer)
    """
)

_ADD_MEMBERS = text(
    "INSERT INTO conversation_members (conversation_id, user_id)"
    " SELECT * FROM unnest(CAST(:conversations AS integer[]), CAST(:users AS integer[]))"
    " ON CONFLICT DO NOTHING RETURNING conversation_id, user_id"
)

_NEXT_DUE = text(
    "UPDATE messages m SET escalation_due_at = s.due"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:dues AS timestamptz[])) AS s(id, due) WHERE m.id = s.id"
)

_AUDIT = text(audit_insert_sql("CAST(:events AS jsonb)"))


@dataclass(frozen=True)
class Claimed:
    id: int
    conversation_id: int
    sender_id: int
    created_at: datetime
    patient_id: int
    patient_organization_id: int


@dataclass(frozen=True)
class PlannedStep:
    message: Claimed
    due: DueStep
    targets: tuple[int, ...]
    #: The people the step adds to the conversation (the on-call member, a delegate).
    joins: tuple[int, ...]


class EscalationScheduler:
    """Takes the due escalation steps of urgent messages, round after round (see the module docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: Callable[[], Policy],
        consents: ConsentIndex,
        *,
        clock: Callable[[], datetime] = utc_now,
        wake: Callable[[], None] = lambda: None,
        interval: float = 5.0,
        batch_size: int = 500,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._consents = consents
        self._clock = clock
        self._wake = wake
        self._interval = interval
        self._batch_size = batch_size

    async def run(self) -> None:
        """Run rounds until cancelled: at once again while a round was full, else every ``interval``."""
        while True:
            try:
                claimed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: the next round tries again
                log.warning("escalation.round_failed", error=type(exc).__name__)
                claimed = 0
            if claimed < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.sleep(self._interval)

    async def run_once(self) -> int:
        """One round at the clock's time, in one transaction; returns how many messages it claimed."""
        now = self._clock()
        policy = self._policy()
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(_CLAIM, {"now": now, "limit": self._batch_size})).all()
            if not rows:
                return 0
            claimed = [Claimed(*r) for r in rows]
            events, queued = await self._round(session, claimed, policy, now)
        emit_audit_log(events)
        if queued:
            self._wake()
        return len(claimed)

    async def _round(
        self, session: AsyncSession, claimed: Sequence[Claimed], policy: Policy, now: datetime
    ) -> tuple[list[AuditEvent], int]:
        ids = [m.id for m in claimed]
        taken = await _taken(session, ids)
        schedule = policy.escalation
        due = {m.id: due_steps(schedule, m.created_at, now, taken.get(m.id, Taken())) for m in claimed}
        wanted = {step.step for steps in due.values() for step in steps}
        due_ids = [m for m, steps in due.items() if steps]
        unread = (
            await _pairs(session, _UNREAD, {"ids": due_ids}) if wanted & {Step.REALERT, Step.TEXT} else {}
        )
        on_call = (
            await _pairs(session, _ON_CALL, {"ids": due_ids, "now": now}) if Step.ON_CALL in wanted else {}
        )
        admins: dict[int, list[int]] = {}
        if Step.ADMIN in wanted:
            orgs = sorted({m.patient_organization_id for m in claimed})
            admins = await _pairs(session, _ADMINS, {"orgs": orgs})
        # Someone away is replaced by their delegate, for every step but the admins'.
        people = {u for d in (unread, on_call) for users in d.values() for u in users}
        delegates: dict[int, int] = {}
        if people:
            rows = await session.execute(_DELEGATES, {"ids": sorted(people), "now": now})
            delegates = {r.user_id: r.delegate_id for r in rows}
        events: list[AuditEvent] = []
        planned: list[PlannedStep] = []
        by_id = {m.id: m for m in claimed}
        wanted_people: dict[tuple[int, int], int | None] = {}  # (message, person) -> delegate for
        raw: dict[tuple[int, Step], list[tuple[int, int | None]]] = {}
        for message_id, steps in due.items():
            m = by_id[message_id]
            for step in steps:
                people_of: list[tuple[int, int | None]]
                if step.step is Step.ADMIN:
                    people_of = [(u, None) for u in admins.get(m.patient_organization_id, [])]
                else:
                    source = on_call if step.step is Step.ON_CALL else unread
                    people_of = [
                        (delegates[u], u) if u in delegates else (u, None) for u in source.get(message_id, [])
                    ]
                people_of = list(dict(people_of).items())  # one entry per person
                raw[(message_id, step.step)] = people_of
                for person, delegate_for in people_of:
                    wanted_people[(message_id, person)] = delegate_for
        facts = await self._people(session, sorted(wanted_people), by_id, policy, now)
        for message_id, steps in due.items():
            m = by_id[message_id]
            for step in steps:
                candidates = [
                    dataclasses.replace(facts[(message_id, person)], delegate_for=delegate_for)
                    for person, delegate_for in raw[(message_id, step.step)]
                    if (message_id, person) in facts
                ]
                targets, decided = decide_targets(
                    policy,
                    step.step,
                    candidates,
                    message_id=m.id,
                    conversation_id=m.conversation_id,
                    patient_id=m.patient_id,
                    patient_organization_id=m.patient_organization_id,
                    round_=step.round,
                    at=now,
                )
                events += decided
                by_person = {c.user_id: c for c in candidates}
                joins = (
                    () if step.step is Step.ADMIN else tuple(u for u in targets if not by_person[u].is_member)
                )
                planned.append(PlannedStep(m, step, tuple(targets), joins))
        queued = await self._record(session, planned, now, events)
        # When each claimed message is next looked at: with the steps just taken counted.
        dues = []
        for m in claimed:
            before = taken.get(m.id, Taken())
            steps = due[m.id]
            rounds = [s.round for s in steps if s.step is Step.REALERT]
            after = Taken(
                max([before.last_realert_round, *rounds]),
                before.once | {s.step for s in steps if s.step is not Step.REALERT},
            )
            dues.append(next_due(schedule, m.created_at, now, after))
        await session.execute(_NEXT_DUE, {"ids": [m.id for m in claimed], "dues": dues})
        if events:
            await session.execute(_AUDIT, {"events": audit_json(events)})
        return events, queued

    async def _people(
        self,
        session: AsyncSession,
        pairs: Sequence[tuple[int, int]],
        messages: dict[int, Claimed],
        policy: Policy,
        now: datetime,
    ) -> dict[tuple[int, int], Candidate]:
        """What deciding about each (message, person) needs, ``covered`` from the consent index."""
        if not pairs:
            return {}
        rows = await session.execute(
            _PEOPLE, {"message_ids": [p[0] for p in pairs], "user_ids": [p[1] for p in pairs]}
        )
        spec = policy.workflows.get(ESCALATE)
        need = ConsentNeed(
            frozenset({spec.consent_scope}) if spec is not None and spec.consent_scope else frozenset(),
            spec.purposes if spec is not None else frozenset(),
        )
        out: dict[tuple[int, int], Candidate] = {}
        for r in rows:
            m = messages[r.message_id]
            own = r.organization_id == m.patient_organization_id
            covered = own or (
                self._consents.choose(m.patient_id, r.organization_id, millis(now), need).consent is not None
            )
            out[(r.message_id, r.user_id)] = Candidate(
                r.user_id, r.role, r.organization_id, r.is_member, r.on_care_team, covered
            )
        return out

    async def _record(
        self, session: AsyncSession, planned: Sequence[PlannedStep], now: datetime, events: list[AuditEvent]
    ) -> int:
        """Insert the steps, their outbox entries, the members they add and their audit records."""
        if not planned:
            return 0
        rows = [
            {
                "message_id": p.message.id,
                "step": p.due.step.value,
                "round": p.due.round,
                "due_at": p.due.due_at.isoformat(),
                "targets": list(p.targets),
                "state": "queued" if p.targets else "none",
            }
            for p in planned
        ]
        inserted = (await session.execute(_INSERT_STEPS, {"steps": json.dumps(rows), "now": now})).all()
        by_key = {(p.message.id, p.due.step.value, p.due.round): p for p in planned}
        entries = []
        joins: list[tuple[int, int]] = []
        for step_id, message_id, step, round_ in inserted:
            p = by_key[(message_id, step, round_)]
            events.append(
                AuditEvent(
                    event="escalation_step",
                    workflow=ESCALATE,
                    outcome="success" if p.targets else "failure",
                    occurred_at=now,
                    reason=None if p.targets else "nobody_to_alert",
                    resource_type="message",
                    resource_id=str(message_id),
                    patient_id=p.message.patient_id,
                    details={
                        "step": step,
                        "round": round_,
                        "step_id": step_id,
                        "conversation_id": p.message.conversation_id,
                        "targets": len(p.targets),
                        "joined": len(p.joins),
                    },
                )
            )
            if not p.targets:
                continue
            joins += [(p.message.conversation_id, u) for u in p.joins]
            entries.append(_entry(_effect(p, step_id)))
        if joins:
            await session.execute(
                _ADD_MEMBERS, {"conversations": [c for c, _ in joins], "users": [u for _, u in joins]}
            )
        if entries:
            await session.execute(_INSERT_OUTBOX, {"entries": json.dumps(entries)})
        return len(entries)


def _effect(p: PlannedStep, step_id: int) -> Effect:
    m = p.message
    match p.due.step:
        case Step.REALERT:
            return RealertUrgent(m.conversation_id, m.id, step_id)
        case Step.TEXT:
            return TextUrgentAlert(m.id, step_id)
        case Step.ON_CALL | Step.ADMIN:
            return EscalateUrgent(m.conversation_id, m.id, step_id)


def _entry(effect: Effect) -> dict[str, object]:
    row = outbox_row(effect)
    return {
        "kind": row.kind,
        "payload": row.payload,
        "conversation_id": row.conversation_id,
        "message_id": row.message_id,
    }


async def _taken(session: AsyncSession, ids: Sequence[int]) -> dict[int, Taken]:
    found: dict[int, tuple[int, set[Step]]] = {}
    for message_id, step, last_round in (await session.execute(_TAKEN, {"ids": list(ids)})).all():
        _, once = found.setdefault(message_id, (0, set()))
        if step == Step.REALERT:
            found[message_id] = (last_round, once)
        else:
            once.add(Step(step))
    return {m: Taken(r, frozenset(once)) for m, (r, once) in found.items()}


async def _pairs(session: AsyncSession, statement: object, params: dict[str, object]) -> dict[int, list[int]]:
    """Rows of (key, user id) grouped by key, in order."""
    out: dict[int, list[int]] = {}
    for key, user_id in (await session.execute(statement, params)).all():  # type: ignore[call-overload]
        out.setdefault(key, []).append(user_id)
    return out
