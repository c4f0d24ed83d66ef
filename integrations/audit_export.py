"""``caremsg audit export``: audit records as JSON Lines or as a FHIR R4 ``Bundle`` of ``AuditEvent``s.

Both formats are written while the records stream from a server-side cursor, so an export of
millions of records needs no more memory than one batch. The FHIR mapping follows the R4
AuditEvent resource (http://hl7.org/fhir/R4/auditevent.html):

- ``type``: DICOM 110114 *User Authentication* for ``auth.*`` events, else the audit-event-type
  ``rest`` (a RESTful operation); ``subtype``: the caremsg workflow (``urn:caremsg:workflow``).
- ``action``: C/R/U/E from the workflow's verb; ``recorded``: when it happened (UTC).
- ``outcome``: 0 success, 4 denied (minor failure), 8 failure (serious failure); ``outcomeDesc``:
  the reason code.
- ``purposeOfEvent``: v3 ActReason codes for the purpose of use, plus ``BTG`` for break-the-glass.
- ``agent``: the actor (user id, role, organization, source address), ``requestor`` true.
- ``entity``: the patient (``Patient/{id}``) and the record acted on, with the decision, matched
  rule, policy version and request id as ``detail`` entries; the consent relied on, if any
  (``Consent/{id}``). No names, phone numbers or text: the
  export carries what the audit table carries, which is none.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from engine.audit_trail import AuditRecord

FHIR_OUTCOME = {"success": "0", "denied": "4", "failure": "8"}
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE_CODES = {
    "treatment": ("TREAT", "treatment"),
    "care_coordination": ("COC", "coordination of care"),
    "payment": ("HPAYMT", "healthcare payment"),
    "healthcare_operations": ("HOPERAT", "healthcare operations"),
}
_ACTIONS = {"create": "C", "read": "R", "list": "R", "update": "U", "delete": "D"}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def jsonl_record(record: AuditRecord) -> dict[str, Any]:
    """One export line: every audit field (camelCase) and the record's place in the chain."""
    e = record.event
    return {
        "id": record.id,
        "occurredAt": _iso(e.occurred_at),
        "requestId": e.request_id,
        "actorId": e.actor_id,
        "actorRole": e.actor_role,
        "organizationId": e.organization_id,
        "sourceAddress": e.source_address,
        "event": e.event,
        "workflow": e.workflow,
        "resourceType": e.resource_type,
        "resourceId": e.resource_id,
        "patientId": e.patient_id,
        "decision": e.decision,
        "matchedRule": e.matched_rule,
        "reason": e.reason,
        "policyVersion": e.policy_version,
        "purpose": e.purpose,
        "breakGlass": e.break_glass,
        "outcome": e.outcome,
        "details": dict(e.details),
        "subjectHash": e.subject_hash,
        "chain": {"seq": record.seq, "hash": record.hash} if record.seq is not None else None,
    }


def fhir_audit_event(record: AuditRecord) -> dict[str, Any]:
    """The record as a FHIR R4 AuditEvent resource (JSON)."""
    e = record.event
    if e.workflow.startswith("auth."):
        event_type = {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110114",
            "display": "User Authentication",
        }
    else:
        event_type = {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        }
    verb = e.workflow.rsplit(".", 1)[-1]
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record.id),
        "type": event_type,
        "subtype": [{"system": "urn:caremsg:workflow", "code": e.workflow}],
        "action": _ACTIONS.get(verb, "E"),
        "recorded": _iso(e.occurred_at),
        "outcome": FHIR_OUTCOME.get(e.outcome, "8"),
        "agent": [_agent(record)],
        "source": {"site": "caremsg", "observer": {"display": "caremsg"}},
    }
    if e.reason:
        resource["outcomeDesc"] = e.reason
    purposes = []
    if e.purpose in PURPOSE_CODES:
        code, display = PURPOSE_CODES[e.purpose]
        purposes.append({"coding": [{"system": V3_ACT_REASON, "code": code, "display": display}]})
    if e.break_glass:
        purposes.append({"coding": [{"system": V3_ACT_REASON, "code": "BTG", "display": "break the glass"}]})
    if purposes:
        resource["purposeOfEvent"] = purposes
    entities = []
    if e.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{e.patient_id}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    details = [
        {"type": name, "valueString": str(value)}
        for name, value in (
            ("decision", e.decision),
            ("matchedRule", e.matched_rule),
            ("policyVersion", e.policy_version),
            ("requestId", e.request_id),
            ("event", e.event),
            ("chainHash", record.hash),
        )
        if value
    ]
    record_entity: dict[str, Any] = {
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "code": "2",
            "display": "System Object",
        },
        "detail": details,
    }
    if e.resource_type:
        record_entity["what"] = {
            "identifier": {"system": f"urn:caremsg:{e.resource_type}", "value": e.resource_id or "none"}
        }
    entities.append(record_entity)
    consent_id = e.details.get("consent_id") if e.details else None
    if isinstance(consent_id, int):
        # The consent the access or disclosure rested on (42 CFR 2.32: the consent travels with a
        # Part 2 disclosure; every consent is referenced alike).
        consent_entity: dict[str, Any] = {
            "what": {"reference": f"Consent/{consent_id}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
            "description": "the consent relied on",
        }
        entities.append(consent_entity)
    resource["entity"] = entities
    return resource


def _agent(record: AuditRecord) -> dict[str, Any]:
    e = record.event
    agent: dict[str, Any] = {"requestor": True}
    if e.actor_id is not None:
        agent["who"] = {"identifier": {"system": "urn:caremsg:user", "value": str(e.actor_id)}}
    else:
        agent["who"] = {"display": "unauthenticated"}
    if e.actor_role:
        agent["role"] = [{"coding": [{"system": "urn:caremsg:role", "code": e.actor_role}]}]
    if e.organization_id is not None:
        agent["location"] = {
            "identifier": {"system": "urn:caremsg:organization", "value": str(e.organization_id)}
        }
    if e.source_address:
        agent["network"] = {"address": e.source_address, "type": "2"}
    return agent


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, *, force: bool = False) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled and (self.done % 200 == 0 or self.done == self.total):
            self._draw()

    def _draw(self) -> None:
        width = 30
        fraction = self.done / self.total if self.total else 1.0
        filled = int(width * min(fraction, 1.0))
        self.stream.write(f"\rexporting [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


async def write_export(
    records: AsyncIterator[AuditRecord],
    out: TextIO,
    fmt: str,
    progress: Progress,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Write the records as ``jsonl`` or ``fhir`` (one Bundle), as they arrive; returns the count."""
    count = 0
    if fmt == "jsonl":
        async for record in records:
            out.write(json.dumps(jsonl_record(record), separators=(",", ":")) + "\n")
            count += 1
            progress.step()
    else:
        out.write(
            '{"resourceType":"Bundle","type":"collection","timestamp":'
            + json.dumps(_iso(now()))
            + ',"entry":['
        )
        async for record in records:
            entry = {"fullUrl": f"urn:caremsg:audit-event:{record.id}", "resource": fhir_audit_event(record)}
            out.write(("," if count else "") + json.dumps(entry, separators=(",", ":")))
            count += 1
            progress.step()
        out.write("]}\n")
    progress.finish()
    return count
