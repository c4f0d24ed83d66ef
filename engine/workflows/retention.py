"""Retention: deleting message content whose lifespan has ended (policies/retention.toml).

Nobody decides a sweep: the policy file said how long each organization's content lives, and the
service acts on those terms (records name no actor, like the consent-expiry sweep). A message's
content is deleted once it is older than its organization's lifespan (the patient's organization:
it owns the record) and no legal hold on its patient or its conversation lasts:

- ``messages.body`` is emptied and ``content_deleted_at`` set, in one short transaction per batch;
- a recalled message's legal record loses its text too: the recall is a record (who, when, why,
  all kept), but the text it preserved is message content and lives no longer than the message
  would have; a legal hold is what keeps it longer;
- every other copy in caremsg's tables goes in the same batch: attached files and the raw bodies of
  the chat provider's webhooks about it (outbox entries of a message carry ids, never its text, and
  an Idempotency-Key keeps only the id of what it created, never the answer's body);
- an external participant's SMS reply has no message row: its text lives in the outbox entry that
  posts it and in its stored inbound webhook, and is deleted from both by the same terms (the
  conversation's patient's organization, legal holds), audited as ``message.content_deleted`` of
  resource ``sms_reply``; its copy in the channel is deleted through the outbox
  (:class:`~engine.effects.DeleteSmsReplyFromChannel`) if it was posted, else its post is cancelled;
- the channel's copy is deleted through the outbox (:class:`~engine.effects.DeleteFromChannel`,
  the recall's executor, without its notice); a recalled message's copy left the channel already;
- one audit record per message (``message.content_deleted``: ids, the organization, the lifespan
  and retention.toml's version, never content). Audit records are never deleted by retention.

Several instances sweep safely: each batch claims its messages with ``SKIP LOCKED`` and marks them
in the same transaction, so a message is deleted, and audited, once.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from engine.audit import AuditEvent, DetailValue
from engine.effects import DeleteFromChannel, DeleteSmsReplyFromChannel
from engine.policy import Policy
from engine.ports.retention import Cutoffs
from engine.ports.units import RetentionUnitOfWork
from engine.services import Services

#: The workflow the sweep's records carry.
SWEEP = "retention.sweep"


def _unit_of_work(services: Services) -> RetentionUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def cutoffs(policy: Policy, now: datetime) -> Cutoffs:
    """Per organization, the moment before which content has outlived its lifespan at ``now``."""
    rules = policy.retention
    default = None if rules.default_days is None else now - timedelta(days=rules.default_days)
    return Cutoffs(default, {org: rules.cutoff(org, now) for org in rules.by_organization})


async def retention_plan(services: Services) -> dict[int, int]:
    """Per organization id, how many messages' (and SMS replies') content the next sweep would
    delete (no content, no names: counts only). Reads; changes nothing."""
    now = services.clock()
    due = cutoffs(services.policy.current, now)
    if due.nothing_expires:
        return {}
    async with _unit_of_work(services) as uow:
        return await uow.retention.plan(due)


async def sweep_retention(services: Services, *, limit: int = 500) -> int:
    """Delete the content of up to ``limit`` messages (then SMS replies) whose lifespan has ended
    and that no legal hold covers, in one transaction; returns how many. A full batch means there
    may be more."""
    now = services.clock()
    policy = services.policy.current
    due = cutoffs(policy, now)
    if due.nothing_expires:
        return 0
    async with _unit_of_work(services) as uow:
        expired = await uow.retention.claim(due, limit)
        left = limit - len(expired)
        replies = await uow.retention.claim_sms_replies(due, left) if left > 0 else []
        if not expired and not replies:
            return 0
        if expired:
            await uow.retention.delete_content([e.message_id for e in expired], now)
            await uow.outbox.enqueue_all(
                [DeleteFromChannel(e.conversation_id, e.message_id) for e in expired if not e.recalled]
            )
        if replies:
            await uow.retention.delete_sms_replies(replies)
            await uow.outbox.enqueue_all(
                [
                    DeleteSmsReplyFromChannel(
                        r.conversation_id, r.channel_url, r.sender_chat_id, r.dedup_id, r.chat_message_id
                    )
                    for r in replies
                    if r.posted
                ]
            )

        def record(
            resource_type: str,
            resource_id: int,
            patient_id: int,
            organization_id: int,
            request_id: str | None = None,
            **details: DetailValue,
        ) -> None:
            uow.audit.record(
                dataclasses.replace(
                    AuditEvent.by(
                        None,
                        event="message.content_deleted",
                        workflow=SWEEP,
                        outcome="success",
                        occurred_at=now,
                        resource_type=resource_type,
                        resource_id=str(resource_id),
                        patient_id=patient_id,
                        policy_version=policy.version,
                        details={
                            **details,
                            "content_days": policy.retention.days_for(organization_id),
                            "retention_version": policy.retention_version,
                        },
                    ),
                    organization_id=organization_id,
                    request_id=request_id,
                )
            )

        for e in expired:
            record(
                "message",
                e.message_id,
                e.patient_id,
                e.organization_id,
                conversation_id=e.conversation_id,
                recalled=e.recalled,
            )
        for r in replies:
            # The reply's other records (its sms.reply decision) name its webhook event the same way.
            record(
                "sms_reply",
                r.outbox_id,
                r.patient_id,
                r.organization_id,
                None if r.event_id is None else f"webhook-{r.event_id}",
                conversation_id=r.conversation_id,
            )
        await uow.commit()
    services.delivery.wake()
    return len(expired) + len(replies)
