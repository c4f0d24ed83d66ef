"""Policy administration over the API: which policy is in force, and reloading an edit.

A reload goes through the same gate as every other: the new files are checked and their own test
tables run before the swap (see :class:`engine.ports.PolicyReloader`); a broken edit is refused and
the policy in force keeps serving. The decision, and the outcome with both versions, are audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent
from engine.model import Actor
from engine.ports.policy import PolicyReloader, ReloadResult
from engine.ports.units import Transaction
from engine.services import Guard, Services


def _unit_of_work(services: Services) -> Transaction:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class PolicyStatus:
    version: str
    loaded_at: datetime
    rule_count: int
    workflow_count: int


async def policy_status(services: Services, actor: Actor) -> PolicyStatus:
    """The policy in force on this instance."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("policy.read", resource_type="policy")
        await uow.commit()
    policy = guard.policy
    return PolicyStatus(policy.version, services.policy.loaded_at, policy.rule_count, len(policy.workflows))


async def reload_policy(services: Services, actor: Actor, reloader: PolicyReloader) -> ReloadResult:
    """Reload the policy files on this instance (and, if they changed, tell the other instances)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("policy.reload", resource_type="policy")
        result = await reloader.reload("api")
        uow.audit.record(
            AuditEvent.by(
                actor,
                event="policy.reload",
                workflow="policy.reload",
                outcome="success" if result.outcome != "rejected" else "failure",
                occurred_at=guard.now,
                resource_type="policy",
                resource_id=result.version,
                policy_version=result.version,
                details={"outcome": result.outcome, "previous_version": result.previous_version},
            )
        )
        await uow.commit()
    return result
