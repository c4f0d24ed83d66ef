"""Executors of the escalation steps of urgent messages (engine/effects.py: ``RealertUrgent``,
``TextUrgentAlert``, ``EscalateUrgent``), queued by the escalation scheduler (integrations/escalation.py).

Each reads its step (``escalation_steps``) and the message's acknowledgement right before acting:
a message acknowledged in the meantime is not re-alerted, texted or escalated (the step becomes
``cancelled``). What goes out carries ids, never clinical content:

- a re-alert is a post in the conversation's channel by the service's alerts user, naming the
  members it is for (their chat ids in ``data``), who are first made members of the channel (a
  delegate may not be one yet);
- a text goes to each target's registered phone (``users.alert_phone``) with one fixed sentence;
- the on-call step adds the on-call member to the channel and posts the alert there; the admin
  step posts into the patient's organization's escalations channel (admins never read patient
  records under the default policy, so they are not added to the conversation).

Posts are reconciled on the step id in ``data`` (``post_once``), so a repeat never posts twice;
texts are at least once, as every text is (the SMS port has no dedup key).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import Effect, EscalateUrgent, RealertUrgent, TextUrgentAlert
from engine.errors import ChatGatewayError
from engine.ports import SmsGateway
from engine.sms import textable
from integrations.effects.executor import RelayContext
from integrations.effects.messages import post_once
from integrations.effects.outbox import OutboxEntry

log = structlog.get_logger("caremsg.escalation")

#: The chat user escalation alerts are posted as (an opaque id, like every chat user id).
URGENT_ALERTS_USER = "caremsg_urgent_alerts"
#: What the text to a staff member's registered phone says: fixed, no clinical content, no name.
URGENT_TEXT = "An urgent message is waiting for you in caremsg. Open caremsg to read and acknowledge it."

Urgent = RealertUrgent | TextUrgentAlert | EscalateUrgent

_STEP = text(
    """
    SELECT s.id, s.step, s.round, s.target_user_ids, m.acknowledged_at IS NOT NULL AS acknowledged,
           m.id AS message_id, c.channel_url, p.organization_id AS patient_organization_id
    FROM escalation_steps s JOIN messages m ON m.id = s.message_id
    JOIN conversations c ON c.id = m.conversation_id JOIN patients p ON p.id = c.patient_id
    WHERE s.id = :id
    """
)

_TARGETS = text(
    "SELECT id, chat_user_id, alert_phone FROM users WHERE id = ANY(CAST(:ids AS integer[])) ORDER BY id"
)

_SETTLE = text(
    """
    UPDATE escalation_steps s SET state = x.state, reason = x.reason, done_at = now()
    FROM unnest(CAST(:ids AS integer[]), CAST(:states AS text[]), CAST(:reasons AS text[]))
        AS x(id, state, reason)
    WHERE s.id = x.id AND s.state = 'queued'
    """
)


def escalations_channel(organization_id: int) -> str:
    """The chat channel where an organization's admins are alerted about unacknowledged urgent messages."""
    return f"caremsg_escalations_{organization_id}"


class NoSmsGateway(ChatGatewayError):
    """This process was built without an SMS gateway: the text cannot go out (not retried)."""

    code = "no_sms_gateway"


@dataclass(frozen=True)
class _Step:
    id: int
    step: str
    round: int
    message_id: int
    channel_url: str
    patient_organization_id: int
    acknowledged: bool
    #: (chat user id, registered phone) of each person it alerts.
    targets: tuple[tuple[str, str | None], ...]


class UrgentAlertExecutor:
    """Performs the three escalation effects; records each step's outcome in ``escalation_steps``."""

    handles: tuple[type[Effect], ...] = (RealertUrgent, TextUrgentAlert, EscalateUrgent)

    def __init__(self, sms: SmsGateway | None = None) -> None:
        self._sms = sms
        # Per outbox id: the step's state when it was not simply done (cancelled, or a reason).
        self._outcomes: dict[int, tuple[str, str | None]] = {}
        # Phones already texted for a step, so a retry in this process texts only the rest.
        self._texted: dict[int, set[str]] = {}

    async def deliver(self, effect: Urgent, entry: OutboxEntry, ctx: RelayContext) -> None:
        step = await _read(ctx, effect.step_id)
        if step.acknowledged:
            self._outcomes[entry.id] = ("cancelled", "acknowledged")
            return
        chat_ids = [chat for chat, _ in step.targets]
        match effect:
            case RealertUrgent():
                await self._post_in_conversation(
                    ctx,
                    entry,
                    step,
                    chat_ids,
                    f"Urgent message {step.message_id} is waiting for acknowledgement "
                    f"(reminder {step.round}).",
                    "caremsg_urgent_realert",
                )
            case TextUrgentAlert():
                await self._text(entry, step)
            case EscalateUrgent() if step.step == "on_call":
                await self._post_in_conversation(
                    ctx,
                    entry,
                    step,
                    chat_ids,
                    f"Urgent message {step.message_id} has not been acknowledged: you are on call for "
                    "this patient's care team. Read it here and acknowledge it.",
                    "caremsg_urgent_on_call",
                )
            case EscalateUrgent():
                channel = escalations_channel(step.patient_organization_id)
                await ctx.chat.ensure_user(URGENT_ALERTS_USER, "caremsg urgent alerts")
                for chat in chat_ids:
                    await ctx.chat.ensure_user(chat, "Admin")
                await ctx.chat.ensure_channel(
                    channel,
                    name="Urgent message escalations",
                    user_ids=[URGENT_ALERTS_USER, *chat_ids],
                    custom_type="caremsg_urgent_escalations",
                    data=json.dumps({"organization_id": step.patient_organization_id}),
                    repeat=entry.attempts > 1,
                )
                await post_once(
                    ctx.chat,
                    entry,
                    channel,
                    sender_id=URGENT_ALERTS_USER,
                    text=(
                        f"Urgent message {step.message_id} has not been acknowledged by its care team "
                        "or its on-call member. Find who can act on it."
                    ),
                    dedup_id=f"urgent_step_{step.id}",
                    custom_type="caremsg_urgent_admin",
                    data=json.dumps({"escalation_step_id": step.id, "message_id": step.message_id}),
                )

    async def _post_in_conversation(
        self,
        ctx: RelayContext,
        entry: OutboxEntry,
        step: _Step,
        chat_ids: list[str],
        message: str,
        custom_type: str,
    ) -> None:
        """Make the alerts user and the targets members of the channel, then post the alert once."""
        await ctx.chat.ensure_user(URGENT_ALERTS_USER, "caremsg urgent alerts")
        for chat in chat_ids:
            await ctx.chat.ensure_user(chat, "Care team")
        await ctx.chat.invite_members(step.channel_url, [URGENT_ALERTS_USER, *chat_ids])
        await post_once(
            ctx.chat,
            entry,
            step.channel_url,
            sender_id=URGENT_ALERTS_USER,
            text=message,
            dedup_id=f"urgent_step_{step.id}",
            custom_type=custom_type,
            data=json.dumps(
                {"escalation_step_id": step.id, "message_id": step.message_id, "mentioned_user_ids": chat_ids}
            ),
        )

    async def _text(self, entry: OutboxEntry, step: _Step) -> None:
        if self._sms is None:
            raise NoSmsGateway("No SMS gateway for urgent-message texts.")
        phones = [(chat, phone) for chat, phone in step.targets if phone and textable(phone)]
        if not phones:
            self._outcomes[entry.id] = ("none", "no_registered_phone")
            return
        texted = self._texted.setdefault(entry.id, set())
        for chat, phone in phones:
            if phone in texted:
                continue
            await self._sms.send_sms(recipient_user_id=chat, phone_number=phone, text=URGENT_TEXT)
            texted.add(phone)
        if len(phones) < len(step.targets):
            self._outcomes[entry.id] = ("done", "some_without_registered_phone")

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Record each finished step: done, cancelled (acknowledged first), none, or failed with a reason."""
        rows: list[tuple[int, str, str | None]] = []
        for entry in done:
            self._texted.pop(entry.id, None)
            state, reason = self._outcomes.pop(entry.id, ("done", None))
            rows.append((_step_id(entry), state, reason))
        for entry, reason in failed:
            self._texted.pop(entry.id, None)
            self._outcomes.pop(entry.id, None)
            rows.append((_step_id(entry), "failed", reason[:64]))
            log.warning("escalation.step_failed", outbox_id=entry.id, reason=reason)
        if rows:
            await session.execute(
                _SETTLE,
                {
                    "ids": [r[0] for r in rows],
                    "states": [r[1] for r in rows],
                    "reasons": [r[2] for r in rows],
                },
            )


def _step_id(entry: OutboxEntry) -> int:
    effect = entry.effect
    if not isinstance(effect, RealertUrgent | TextUrgentAlert | EscalateUrgent):
        raise TypeError(f"outbox entry {entry.id} is not an escalation step")
    return effect.step_id


async def _read(ctx: RelayContext, step_id: int) -> _Step:
    async with ctx.sessions() as session:
        row = (await session.execute(_STEP, {"id": step_id})).one()
        people = (await session.execute(_TARGETS, {"ids": list(row.target_user_ids)})).all()
    return _Step(
        row.id,
        row.step,
        row.round,
        row.message_id,
        row.channel_url,
        row.patient_organization_id,
        row.acknowledged,
        tuple((p.chat_user_id, p.alert_phone) for p in people),
    )
