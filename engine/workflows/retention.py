"""Retention: deleting message content whose lifespan has ended (policies/retention.toml).

Nobody decides a sweep: the policy file said how long each organization's content lives, and the
service acts on those terms (records name no actor, like the consent-expiry sweep). A message's
content is deleted once it is older than its organization's lifespan (the patient's organization:
it owns the record) and no legal hold on its patient or its conversation lasts:

- ``messages.body`` is emptied and ``content_deleted_at`` set, in one short transaction per batch;
- a recalled message's legal record loses its text too: the recall is a record (who, when, why,
  all kept), but the text it preserved is message content and lives no longer than the message
  would have; a legal hold is what keeps it longer;
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

from engine.audit import AuditEvent
from engine.effects import DeleteFromChannel
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
    """Per organization id, how many messages' content the next sweep would delete (no content,
    no names: counts only). Reads; changes nothing."""
    now = services.clock()
    due = cutoffs(services.policy.current, now)
    if due.nothing_expires:
        return {}
    async with _unit_of_work(services) as uow:
        return await uow.retention.plan(due)


async def sweep_retention(services: Services, *, limit: int = 500) -> int:
    """Delete the content of up to ``limit`` messages whose lifespan has ended and that no legal
    hold covers, in one transaction; returns how many. A full batch means there may be more."""
    now = services.clock()
    policy = services.policy.current
    due = cutoffs(policy, now)
    if due.nothing_expires:
        return 0
    async with _unit_of_work(services) as uow:
        expired = await uow.retention.claim(due, limit)
        if not expired:
            return 0
        await uow.retention.delete_content([e.message_id for e in expired], now)
        await uow.outbox.enqueue_all(
            [DeleteFromChannel(e.conversation_id, e.message_id) for e in expired if not e.recalled]
        )
        for e in expired:
            uow.audit.record(
                dataclasses.replace(
                    AuditEvent.by(
                        None,
                        event="message.content_deleted",
                        workflow=SWEEP,
                        outcome="success",
                        occurred_at=now,
                        resource_type="message",
                        resource_id=str(e.message_id),
                        patient_id=e.patient_id,
                        policy_version=policy.version,
                        details={
                            "conversation_id": e.conversation_id,
                            "content_days": policy.retention.days_for(e.organization_id),
                            "retention_version": policy.retention_version,
                            "recalled": e.recalled,
                        },
                    ),
                    organization_id=e.organization_id,
                )
            )
        await uow.commit()
    services.delivery.wake()
    return len(expired)
