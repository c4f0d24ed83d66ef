"""What the audit trail answers: searches for auditors and a patient's accounting of disclosures.

Engine types only; the adapter (``integrations.db.audit``) reads them from PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.audit import AuditEvent

#: HIPAA's right to an accounting of disclosures covers the six years before the request.
DISCLOSURE_PERIOD = timedelta(days=6 * 365 + 2)  # six calendar years, leap days included


@dataclass(frozen=True)
class AuditRecord:
    """A stored audit event with its id and, once sealed, its place in the hash chain."""

    id: int
    event: AuditEvent
    seq: int | None = None
    hash: str | None = None


@dataclass(frozen=True)
class AuditFilter:
    """Which events an auditor asks for; ``organization_id`` is always the auditor's own.

    An event belongs to an organization when its actor acted for it or when it is about one of the
    organization's patients (so an auditor sees who of another organization read their patients).
    Searched by ``subject_hash`` (an exact email), the events of no organization about that address
    are included too: a failed login for an email without an account belongs to no organization,
    and any auditor who knows the address can find it.
    """

    organization_id: int
    actor_id: int | None = None
    patient_id: int | None = None
    workflow: str | None = None
    decision: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    break_glass: bool | None = None
    subject_hash: str | None = None


@dataclass(frozen=True)
class Disclosure:
    """One disclosure of a patient's information outside the patient's organization.

    ``recipient`` is ``person`` (staff of another organization, named by user id, role and
    organization) or ``external`` (an external party named by the consent, e.g. an SMS participant).
    """

    audit_event_id: int
    occurred_at: datetime
    workflow: str
    actor_id: int | None
    actor_role: str | None
    actor_organization_id: int | None
    recipient: str
    recipient_user_id: int | None
    recipient_role: str | None
    recipient_organization_id: int | None
    consent_id: int | None
    purpose: str | None
    #: The consent covers 42 CFR Part 2 records: the disclosure carries the 2.32 notice.
    part2: bool = False
    #: That notice, as the policy in force words it (set by the workflow that lists disclosures).
    part2_notice: str | None = None
