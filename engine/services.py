"""What every workflow needs, and the guard that decides and records each step.

A workflow is: authenticate (done by the caller, who passes an :class:`~engine.model.Actor`) →
gather facts → decide → do the work in one unit of work → enqueue effects → audit → commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.audit import AuditEvent, DetailValue
from engine.decisions import Decision, Fact
from engine.errors import Forbidden, NotFound
from engine.model import Actor
from engine.policy import Policy, PolicyHolder
from engine.ports import DeliveryTrigger, PasswordHasher, TokenService, UnitOfWork, UnitOfWorkFactory


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EngineSettings:
    self_registration: bool = True
    default_organization: str = "Default Organization"
    default_page_size: int = 50
    max_page_size: int = 200


@dataclass(frozen=True)
class Services:
    """The dependencies of every workflow, built once by the composition root."""

    uow: UnitOfWorkFactory
    policy: PolicyHolder
    passwords: PasswordHasher
    tokens: TokenService
    delivery: DeliveryTrigger
    settings: EngineSettings = EngineSettings()
    clock: Callable[[], datetime] = utc_now

    def page_size(self, requested: int | None) -> int:
        if requested is None:
            return self.settings.default_page_size
        return max(1, min(requested, self.settings.max_page_size))


class Guard:
    """Decides each step of one workflow against one policy version and records every decision.

    The policy is read once, so every decision of a workflow carries the same version even if a
    reload swaps the policy half-way through.
    """

    def __init__(self, services: Services, uow: UnitOfWork, actor: Actor) -> None:
        self.uow = uow
        self.actor = actor
        self.now = services.clock()
        self.policy: Policy = services.policy.current

    def require(
        self,
        workflow: str,
        facts: Iterable[str] = (),
        *,
        resource_type: str | None = None,
        resource_id: object | None = None,
        patient_id: int | None = None,
        subject_role: str | None = None,
        field: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> Decision:
        """Decide; record the decision; raise :class:`Forbidden` unless allowed.

        ``subject_role`` decides about someone other than the actor (a member being added); the
        record still names the actor who asked.
        """
        role = subject_role or self.actor.role.value
        decision = self.policy.decide(role, workflow, facts)
        self.uow.audit.record(
            AuditEvent.for_decision(
                decision,
                actor=self.actor,
                occurred_at=self.now,
                resource_type=resource_type,
                resource_id=resource_id,
                patient_id=patient_id,
                details=details,
            )
        )
        if not decision.allowed:
            raise Forbidden(decision, field=field)
        return decision

    def permits(
        self,
        workflow: str,
        facts: Iterable[str],
        *,
        resource_type: str,
        resource_id: object,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> bool:
        """Like :meth:`require`, but answers instead of raising: for filtering a list item by item."""
        try:
            self.require(
                workflow,
                facts,
                resource_type=resource_type,
                resource_id=resource_id,
                patient_id=patient_id,
                details=details,
            )
        except Forbidden:
            return False
        return True

    def identify(self, *, resource_id: object, patient_id: int | None = None) -> None:
        """Attach the id of a record created after its decision to that decision's audit event."""
        self.uow.audit.amend_last(resource_id=str(resource_id), patient_id=patient_id)

    def require_role(
        self,
        workflow: str,
        *,
        resource_type: str | None = None,
        resource_id: object | None = None,
        patient_id: int | None = None,
    ) -> None:
        """Deny early, before any lookup, when no rule lets the actor's role run the workflow at all.

        Looking a record up first would tell a role that may never see it whether it exists.
        """
        if not self.policy.role_may(self.actor.role.value, workflow):
            self.require(
                workflow, (), resource_type=resource_type, resource_id=resource_id, patient_id=patient_id
            )

    async def patient_facts(
        self,
        workflow: str,
        patient_id: int,
        *,
        user_id: int | None = None,
        organization_id: int | None = None,
    ) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
        """The facts between a person (the actor by default) and a patient; 404 if there is no patient."""
        user_id = self.actor.user_id if user_id is None else user_id
        organization_id = self.actor.organization_id if organization_id is None else organization_id
        relation = await self.uow.facts.patient_relation(
            patient_id, user_id=user_id, organization_id=organization_id, at=self.now
        )
        if relation is None:
            self.record_missing(workflow, "patient", patient_id)
            raise NotFound("patient")
        facts: set[str] = set()
        details: dict[str, DetailValue] = {}
        if relation.patient_organization_id == organization_id:
            facts |= {Fact.OWN_ORG, Fact.COVERED}
        if relation.covering_consent_id is not None:
            facts.add(Fact.COVERED)
            details["consent_id"] = relation.covering_consent_id
        if relation.on_care_team:
            facts.add(Fact.CARE_TEAM)
        return frozenset(facts), details

    def record_missing(self, workflow: str, resource_type: str, resource_id: object) -> None:
        self.uow.audit.record(
            AuditEvent(
                event="lookup",
                workflow=workflow,
                outcome="failure",
                occurred_at=self.now,
                actor_id=self.actor.user_id,
                actor_role=self.actor.role.value,
                organization_id=self.actor.organization_id,
                request_id=self.actor.request_id,
                source_address=self.actor.source_address,
                resource_type=resource_type,
                resource_id=str(resource_id),
                reason="not_found",
            )
        )
