"""Telling compliance officers at once that someone broke the glass on one of their patients.

The break-the-glass workflow asks for one :class:`engine.effects.NotifyComplianceOfBreakGlass` in the
transaction that opens the session; this executor posts it into the organization's compliance-alerts
chat channel (created on first use, with every active compliance officer of the patient's
organization as a member) as the system user. The text carries ids only, never PHI: the officers open
the review list (``GET /api/break-glass``) for the rest. Safe to repeat: the post carries the session
id in ``data`` and is reconciled on it (``post_once``); its ``dedup_id`` is the session's too.
The relay audits every delivery (``delivery.notify_break_glass``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.effects import Effect, NotifyComplianceOfBreakGlass
from integrations.effects.executor import RelayContext
from integrations.effects.messages import post_once
from integrations.effects.outbox import OutboxEntry

log = structlog.get_logger("caremsg.break_glass")

#: The chat user compliance alerts are posted as (an opaque id, like every chat user id).
ALERTS_USER = "caremsg_compliance_alerts"


def alerts_channel(organization_id: int) -> str:
    """The chat channel an organization's compliance alerts are posted in."""
    return f"caremsg_compliance_{organization_id}"


class BreakGlassAlertExecutor:
    """Post one break-the-glass opening into the patient's organization's compliance channel."""

    handles: tuple[type[Effect], ...] = (NotifyComplianceOfBreakGlass,)

    async def deliver(
        self, effect: NotifyComplianceOfBreakGlass, entry: OutboxEntry, ctx: RelayContext
    ) -> None:
        async with ctx.sessions() as session:
            opened = (
                await session.execute(
                    text(
                        "SELECT b.id, b.user_id, b.organization_id, b.patient_id, b.expires_at,"
                        " p.organization_id AS patient_organization_id"
                        " FROM break_glass_sessions b JOIN patients p ON p.id = b.patient_id"
                        " WHERE b.id = :id"
                    ),
                    {"id": effect.session_id},
                )
            ).one()
            officers = (
                (
                    await session.execute(
                        text(
                            "SELECT chat_user_id FROM users WHERE organization_id = :org"
                            " AND role = 'compliance_officer' AND is_active ORDER BY id"
                        ),
                        {"org": opened.patient_organization_id},
                    )
                )
                .scalars()
                .all()
            )
        channel = alerts_channel(opened.patient_organization_id)
        await ctx.chat.ensure_user(ALERTS_USER, "caremsg compliance alerts")
        for officer in officers:
            await ctx.chat.ensure_user(officer, "Compliance officer")
        await ctx.chat.ensure_channel(
            channel,
            name="Compliance alerts",
            user_ids=[ALERTS_USER, *officers],
            custom_type="caremsg_compliance_alerts",
            data=json.dumps({"organization_id": opened.patient_organization_id}),
            repeat=entry.attempts > 1,  # read the channel before creating it again
        )
        # Reconciled on ``data`` (the session id), not trusted to dedup_id: see effects/messages.py.
        await post_once(
            ctx.chat,
            entry,
            channel,
            sender_id=ALERTS_USER,
            text=(
                f"Emergency access opened: session {opened.id}, patient {opened.patient_id}, by user "
                f"{opened.user_id} of organization {opened.organization_id}, until "
                f"{opened.expires_at.isoformat()}. Review it at GET /api/break-glass."
            ),
            dedup_id=f"break_glass_{opened.id}",
            custom_type="caremsg_break_glass",
            data=json.dumps({"break_glass_session_id": opened.id, "patient_id": opened.patient_id}),
        )

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        """Nothing to record on success beyond the relay's own delivery audit record."""
        for entry, reason in failed:
            log.error("break_glass.notification_failed", outbox_id=entry.id, reason=reason)
