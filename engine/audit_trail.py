"""What the audit trail answers: searches for auditors and a patient's accounting of disclosures.

Engine types only; the adapter (``integrations.db.audit``) reads them from PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.audit import AuditEvent
from engine.audit_chain import ChainHead, VerifyReport

#: The audit event of a message disclosed to the staff of another organization in its conversation:
#: one per recipient organization, naming the consent the disclosure rests on (``consent_id``) and
#: the organization (``recipient_organization_id``). The accounting of disclosures lists it.
DISCLOSED = "message.disclosed"

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
    The events of no organization (a failed login for an email without an account) belong to none,
    even searched by ``subject_hash`` (an exact email): finding one for an address and nothing for
    another would tell that the other has an account in another organization. Nor do its staff's
    records of what they were not told (see :data:`engine.audit.ANSWERED`).
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
    reason: str | None = None
    purpose: str | None = None


@dataclass(frozen=True)
class Disclosure:
    """One disclosure of a patient's information outside the patient's organization.

    ``recipient`` is ``person`` (staff of another organization, named by user id, role and
    organization), ``organization`` (the staff of another organization who are members of the
    conversation a message was sent in, named by their organization) or ``external`` (an external
    party named by the consent, e.g. an SMS participant).
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


# --- the hash chain as the console shows it --------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A signed checkpoint of the chain head kept in ``audit_anchors`` (``caremsg audit anchor
    --store``, or the console's "create an anchor")."""

    id: int
    seq: int
    event_id: int
    hash: str
    key_id: str
    signed_at: datetime


@dataclass(frozen=True)
class ChainPlace:
    """Where a sealed record sits in the hash chain: its entry, the hash it links to, and the
    first anchor whose head is at or after it (which then vouches for it), if any."""

    seq: int
    digest: str
    prev_hash: str
    hash: str
    anchor: Anchor | None


@dataclass(frozen=True)
class RecordDetail:
    """One audit record with its place in the chain (None while it is not sealed)."""

    record: AuditRecord
    place: ChainPlace | None


@dataclass(frozen=True)
class ChainStatus:
    """The chain's head, how many records wait to be sealed, and the newest anchors."""

    head: ChainHead
    unsealed: int
    anchors: tuple[Anchor, ...]


@dataclass
class VerificationRun:
    """One verification of the whole chain, run in the background by one service instance.

    Mutable on purpose: the instance running it moves ``checked`` on after each batch, and sets
    ``report`` (or ``error``) when it ends; pages read it as it goes.
    """

    id: str
    started_by: int
    started_at: datetime
    total: int = 0
    checked: int = 0
    finished_at: datetime | None = None
    report: VerifyReport | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        """``running``, ``ok`` (no problem found), ``broken`` (a problem found) or ``error``."""
        if self.error is not None:
            return "error"
        if self.report is None:
            return "running"
        return "ok" if self.report.ok else "broken"
