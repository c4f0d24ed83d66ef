"""REST endpoints for the audit capability (see README "Audit"): searching the audit trail, and a
patient's accounting of disclosures. Schemas live here because only these endpoints use them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from engine.audit_trail import AuditFilter, AuditRecord, Disclosure
from engine.model import Actor, Purpose
from engine.workflows import audit
from handlers.requests import path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas import AuditId, Email, Id, PageOf, QueryTime, Request, Response

#: The keys an audit event's ``details`` may carry (stored snake_case, answered camelCase).
AUDIT_DETAILS: dict[str, tuple[str, str]] = {
    "consentId": ("integer", "The consent the action relied on, or the consent acted on."),
    "purpose": ("string", "The purpose of use of the consent relied on."),
    "recipientType": ("string", "For consents: organization, compliance_group or external."),
    "breakGlassSessionId": ("integer", "The emergency-access session the action relied on."),
    "subjectUserId": ("integer", "The staff member the action was about (added, removed, refused)."),
    "externalParticipantId": ("integer", "The external participant the action was about."),
    "externalIndex": ("integer", "Position of the external member in the request."),
    "conversationId": ("integer", "The conversation concerned."),
    "outboxId": ("integer", "The delivery (outbox entry) this event records."),
    "attempts": ("integer", "Delivery attempts made so far."),
    "facts": ("string", "The policy facts the decision rested on, joined with `&`."),
    "fields": ("string", "The fields changed, comma-separated (names only, never values)."),
    "role": ("string", "The role given or asked for."),
    "via": ("string", "How the action arrived, e.g. chat_app."),
    "endedBy": ("string", "What ended the action early (a reason code)."),
    "expiresAt": ("string", "When the emergency access ends (ISO 8601)."),
    "outcome": ("string", "For a policy reload: swapped, unchanged or rejected."),
    "previousVersion": ("string", "For a policy reload: the version before."),
    "organizationId": ("integer", "The organization searched (audit searches)."),
    "route": ("string", "The route a refused token was sent to."),
    "file": ("string", "For a policy change: the policy file (relative to the policy directory)."),
    "proposalId": ("integer", "For a policy change: the proposal decided."),
    "proposerId": ("integer", "For a policy change: who proposed it."),
    "approverId": ("integer", "For an applied policy change: who approved it (never the proposer)."),
    "proposalReason": ("string", "For a policy change: the proposer's reason."),
    "diff": ("string", "For a policy change: the unified diff of the file (policy text, never PHI)."),
    "versionBefore": ("string", "For an applied policy change: the policy version before."),
    "versionAfter": ("string", "For an applied policy change: the policy version after."),
}
_DETAILS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What else the event records: ids and reason codes, never PHI. Keys are camelCase; "
    "the known ones are listed, and a newer workflow may add others.",
    "properties": {k: {"type": [t, "null"], "description": d} for k, (t, d) in AUDIT_DETAILS.items()},
    "additionalProperties": True,
}


def camel_keys(value: Any) -> Any:
    """The stored (snake_case) details as the API names them: camelCase keys, at every depth."""
    if isinstance(value, dict):
        return {to_camel(str(k)): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


WorkflowName = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+)+$", max_length=64)]
#: A reason code as the audit trail stores it (``no_active_consent``, ``bad_password``, ...).
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class _Query(Request):
    # Query strings are text: lax parsing ("5" is an id), but unknown parameters are still refused.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=False, frozen=True)


class AuditEventsQuery(_Query):
    cursor: AuditId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None
    actor_id: Id | None = None
    patient_id: Id | None = None
    organization_id: Id | None = Field(None, description="Only one's own organization is allowed.")
    workflow: WorkflowName | None = None
    decision: Literal["allow", "deny"] | None = None
    outcome: Literal["success", "denied", "failure"] | None = None
    from_: QueryTime | None = Field(None, alias="from", description="Inclusive, ISO 8601 with offset.")
    to: QueryTime | None = Field(None, description="Exclusive, ISO 8601 with offset.")
    break_glass: bool | None = None
    email: Email | None = Field(None, description="Matched through its keyed hash; never stored in clear.")
    reason: ReasonCode | None = Field(
        None, description="The reason code recorded (e.g. `no_active_consent`, `purpose_not_permitted`)."
    )
    purpose: Purpose | None = Field(
        None, description="The purpose of use recorded: stated by the client, else the consent's."
    )

    def to_filter(self, organization_id: int) -> AuditFilter:
        """The engine's filter for these parameters (the API and the console's search share it)."""
        return AuditFilter(
            organization_id=self.organization_id or organization_id,
            actor_id=self.actor_id,
            patient_id=self.patient_id,
            workflow=self.workflow,
            decision=self.decision,
            outcome=self.outcome,
            since=self.from_,
            until=self.to,
            break_glass=self.break_glass,
            reason=self.reason,
            purpose=None if self.purpose is None else self.purpose.value,
        )


class AuditEventPublic(Response):
    id: int
    occurred_at: datetime
    request_id: str | None
    actor_id: int | None
    actor_role: str | None
    organization_id: int | None
    source_address: str | None
    event: str
    workflow: str
    resource_type: str | None
    resource_id: str | None
    patient_id: int | None
    decision: str | None
    matched_rule: str | None
    reason: str | None
    policy_version: str | None
    purpose: str | None
    break_glass: bool
    outcome: str
    details: dict[str, Any] = Field(json_schema_extra=_DETAILS_SCHEMA)
    chain_seq: int | None = Field(description="Position in the hash chain; null until sealed.")
    chain_hash: str | None

    @classmethod
    def of(cls, r: AuditRecord) -> AuditEventPublic:
        e = r.event
        return cls(
            id=r.id,
            occurred_at=e.occurred_at,
            request_id=e.request_id,
            actor_id=e.actor_id,
            actor_role=e.actor_role,
            organization_id=e.organization_id,
            source_address=e.source_address,
            event=e.event,
            workflow=e.workflow,
            resource_type=e.resource_type,
            resource_id=e.resource_id,
            patient_id=e.patient_id,
            decision=e.decision,
            matched_rule=e.matched_rule,
            reason=e.reason,
            policy_version=e.policy_version,
            purpose=e.purpose,
            break_glass=e.break_glass,
            outcome=e.outcome,
            details=camel_keys(dict(e.details)),
            chain_seq=r.seq,
            chain_hash=r.hash,
        )


class DisclosuresQuery(_Query):
    cursor: AuditId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None
    from_: QueryTime | None = Field(None, alias="from", description="Default: six years before `to`.")
    to: QueryTime | None = Field(None, description="Default: now. At most six years after `from`.")


class PersonPublic(Response):
    kind: Literal["person", "organization", "external"] = Field(
        description="`person`: a user (id, role, organization); `organization`: the staff of an "
        "organization who are members of the conversation a message was sent in (organization only); "
        "`external`: an external party named by the consent."
    )
    user_id: int | None
    role: str | None
    organization_id: int | None


class DisclosurePublic(Response):
    audit_event_id: int
    occurred_at: datetime
    workflow: str
    actor: PersonPublic = Field(
        description="Who acted (for a person of another organization: the recipient)."
    )
    recipient: PersonPublic = Field(description="Who received the information.")
    consent_id: int | None = Field(description="The consent the disclosure was made under.")
    purpose: str | None
    part2_notice: str | None = Field(
        None,
        description="Under a consent that covers 42 CFR Part 2 records: the 2.32 notice that went with the "
        "disclosure (policies/notices.toml).",
    )

    @classmethod
    def of(cls, d: Disclosure) -> DisclosurePublic:
        return cls(
            audit_event_id=d.audit_event_id,
            occurred_at=d.occurred_at,
            workflow=d.workflow,
            actor=PersonPublic(
                kind="person", user_id=d.actor_id, role=d.actor_role, organization_id=d.actor_organization_id
            ),
            recipient=PersonPublic(
                kind="external"
                if d.recipient == "external"
                else "organization"
                if d.recipient == "organization"
                else "person",
                user_id=d.recipient_user_id,
                role=d.recipient_role,
                organization_id=d.recipient_organization_id,
            ),
            consent_id=d.consent_id,
            purpose=d.purpose,
            part2_notice=d.part2_notice,
        )


async def list_audit_events(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, AuditEventsQuery)
    cmd = audit.SearchAuditEvents(
        q.to_filter(actor.organization_id),
        email=q.email,
        after=q.cursor,
        limit=q.limit,
    )
    page = await audit.search_audit_events(services(request), actor, cmd)
    items = [AuditEventPublic.of(r) for r in page.items]
    return respond(PageOf[AuditEventPublic](items=items, next_cursor=page.next_cursor))


async def list_patient_disclosures(request: web.Request, actor: Actor) -> web.Response:
    patient_id = path_id(request, "patientId")
    q = query(request, DisclosuresQuery)
    cmd = audit.ListDisclosures(patient_id, since=q.from_, until=q.to, after=q.cursor, limit=q.limit)
    page = await audit.list_disclosures(services(request), actor, cmd)
    items = [DisclosurePublic.of(d) for d in page.items]
    return respond(PageOf[DisclosurePublic](items=items, next_cursor=page.next_cursor))


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/audit-events",
        list_audit_events,
        "listAuditEvents",
        "Search the audit trail of one's organization",
        "audit",
        response=PageOf[AuditEventPublic],
        query=AuditEventsQuery,
        errors=(401, 403, 422),
        description=(
            "Auditors and compliance officers, own organization only: events whose actor acted for "
            "it or that concern its patients. Ordered by id (stable); page with `cursor`."
        ),
    ),
    Endpoint(
        "GET",
        "/api/patients/{patientId}/disclosures",
        list_patient_disclosures,
        "listPatientDisclosures",
        "A patient's accounting of disclosures (at most six years)",
        "audit",
        response=PageOf[DisclosurePublic],
        query=DisclosuresQuery,
        errors=(401, 403, 404, 422),
        description=(
            "Every disclosure of the patient's information outside the patient's organization: "
            "accesses by staff of another organization under a consent, and external parties "
            "admitted under a consent. Who, when, under which consent, for what purpose."
        ),
    ),
]
