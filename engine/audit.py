"""Audit events: one per decision and per access to patient data. Never names, phone numbers or text.

Events are buffered by the unit of work and written in the same transaction as the action they
record. If that transaction does not commit, the unit of work writes them again in a transaction of
their own with the outcome ``denied`` or ``failure``, so a refused or failed action is on record too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from engine.decisions import Decision
from engine.model import Actor

Outcome = Literal["success", "denied", "failure"]
DetailValue = str | int | bool | None


#: ``details.answered`` on a record the actor's organization does not see: what the actor was
#: answered instead of what the record says (``not_found`` for a record they may not know of, see
#: :meth:`engine.services.Decider.require`; ``role_not_permitted`` for what a role refusal gathered
#: for the record only, see :meth:`engine.services.Guard.require_role_recording_facts`). The
#: organization's view of the trail shows the records of what it was answered, made beside it, the
#: same as for an id that does not exist; the record with the truth stays for the deployment's own
#: tools (``caremsg audit``) and for the organization whose patient it concerns.
ANSWERED = "answered"


def recorded_facts(facts: frozenset[str] | None) -> str | None:
    """How a decision's facts are kept in ``details.facts``: joined with ``&`` (``""`` for none), or
    null when they were not computed. ``caremsg policy diff`` decides a record again from them."""
    return None if facts is None else "&".join(sorted(facts))


def replayable_facts(details: Mapping[str, object]) -> frozenset[str] | None:
    """The facts a recorded decision was decided on, or None if the record cannot be replayed."""
    raw = details.get("facts")
    if not isinstance(raw, str):
        return None
    return frozenset(part for part in raw.split("&") if part)


@dataclass(frozen=True)
class AuditEvent:
    """What happened, who did it, to which record, what the policy said, and how it ended."""

    event: str
    workflow: str
    outcome: Outcome
    occurred_at: datetime
    actor_id: int | None = None
    actor_role: str | None = None
    organization_id: int | None = None
    request_id: str | None = None
    source_address: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: int | None = None
    decision: str | None = None
    matched_rule: str | None = None
    reason: str | None = None
    policy_version: str | None = None
    purpose: str | None = None
    break_glass: bool = False
    details: Mapping[str, DetailValue] = field(default_factory=dict)
    #: Keyed hash of an identifier that must be searchable but never stored in clear (the email of
    #: a failed login): see :class:`engine.audit_chain.IdentifierHasher`.
    subject_hash: str | None = None

    @classmethod
    def by(cls, actor: Actor | None, **fields: Any) -> AuditEvent:
        """An event whose who-fields (id, role, organization, request, address) come from ``actor``."""
        return cls(
            actor_id=actor.user_id if actor else None,
            actor_role=actor.role.value if actor else None,
            organization_id=actor.organization_id if actor else None,
            request_id=actor.request_id if actor else None,
            source_address=actor.source_address if actor else None,
            **fields,
        )

    @classmethod
    def for_decision(
        cls,
        decision: Decision,
        *,
        actor: Actor | None,
        occurred_at: datetime,
        resource_type: str | None,
        resource_id: object | None = None,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
        purpose: str | None = None,
        break_glass: bool = False,
    ) -> AuditEvent:
        return cls.by(
            actor,
            event="decision",
            workflow=decision.workflow,
            outcome="success" if decision.allowed else "denied",
            occurred_at=occurred_at,
            resource_type=resource_type,
            resource_id=None if resource_id is None else str(resource_id),
            patient_id=patient_id,
            decision=decision.decision,
            matched_rule=decision.rule,
            reason=decision.reason,
            policy_version=decision.policy_version,
            details={**(details or {}), "facts": recorded_facts(decision.facts)},
            purpose=purpose,
            break_glass=break_glass,
        )

    def ended(self, outcome: Outcome, cause: str) -> AuditEvent:
        """The same event with the outcome the action really had, when its transaction rolled back.

        The decision's own reason stays; ``details.ended_by`` says what stopped the action.
        """
        if self.outcome == "denied":
            return self
        return replace(self, outcome=outcome, details={**self.details, "ended_by": cause})
