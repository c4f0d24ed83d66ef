"""Consent ports: consents and their lifecycle, compliance groups, break-the-glass, contact directories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from engine.model import (
    FULL_SCOPE,
    ComplianceGroup,
    Consent,
    ConsentScope,
    Conversation,
    OrganizationContact,
    Page,
    Part2Elements,
    Purpose,
    RecipientType,
)


@dataclass(frozen=True)
class NewConsent:
    patient_id: int
    recipient_type: RecipientType
    organization_id: int | None
    compliance_group_id: int | None
    external_phone_number: str | None
    external_name: str | None
    purpose: Purpose
    effective_at: datetime
    expires_at: datetime | None
    recorded_by: int
    scope: frozenset[ConsentScope] = FULL_SCOPE
    part2: Part2Elements | None = None


class ConsentRepository(Protocol):
    async def add(self, consent: NewConsent) -> Consent: ...

    async def list_for_patient(self, patient_id: int, *, disclosed_to: int | None = None) -> list[Consent]:
        """The patient's consents, oldest first; with ``disclosed_to``, only those naming that
        organization or a compliance group it belongs to."""
        ...


class ComplianceGroupRepository(Protocol):
    async def add(
        self,
        name: str,
        description: str | None,
        organization_id: int,
        created_by: int,
        members: Sequence[int],
    ) -> ComplianceGroup: ...

    async def get(self, group_id: int) -> ComplianceGroup | None: ...

    async def list(
        self, after: int | None, limit: int, *, visible_to: int | None = None, owned: bool, shared: bool
    ) -> Page[ComplianceGroup]:
        """Groups by id. With ``visible_to``, only those that organization owns (if ``owned``) or that
        were shared with it (if ``shared``); without, every group."""
        ...

    async def share(self, group_id: int, organization_id: int, shared_by: int) -> bool:
        """Share the group with the organization; False if it was shared with it already."""
        ...


class ConsentLifecycle(Protocol):
    """Revocation and the numbered change log, in the workflow's transaction."""

    async def get_for_update(self, consent_id: int) -> Consent | None:
        """The consent, locked until the transaction ends (two revocations cannot interleave).

        Waits, longer than a statement may take, for whoever holds the consent to act on it (a text
        being handed to the SMS provider under it): what they do happens before this revocation."""
        ...

    async def revoke(self, consent_id: int, *, revoked_by: int, reason: str, at: datetime) -> Consent:
        """Mark the consent revoked at ``at``; it stops counting from that moment."""
        ...

    async def record_change(self, consent_id: int, patient_id: int, op: str) -> int:
        """Append to the change log and notify every instance on commit (same transaction); the
        returned sequence number orders the change. The notification carries ids only."""
        ...

    async def patient_conversations(self, patient_id: int) -> list[Conversation]:
        """Every conversation about the patient, with its current staff members."""
        ...

    async def remove_members(self, conversation_id: int, user_ids: Sequence[int]) -> None:
        """Take staff out of a conversation: they can no longer read it or send into it."""
        ...

    async def externals_admitted_by(self, consent_id: int) -> list[ExternalCoverage]:
        """External participants (not yet removed) whose admission rests on this consent."""
        ...

    async def readmit_external(self, participant_id: int, consent_id: int) -> None:
        """Another active consent names the participant: let it carry them from now on."""
        ...

    async def remove_external(self, participant_id: int, at: datetime) -> None:
        """Mark the participant removed (``external_participants.removed_at``): no SMS after this."""
        ...

    async def claim_expired(self, at: datetime, limit: int) -> list[ExpiredConsent]:
        """Up to ``limit`` consents expired by ``at``, not revoked and not swept yet, oldest expiry
        first, locked until the transaction ends; rows another transaction holds are skipped, so
        several instances sweep different consents."""
        ...

    async def mark_expiry_swept(self, consent_id: int, at: datetime) -> None:
        """Record that what the expired consent granted has been ended."""
        ...


@dataclass(frozen=True)
class ExpiredConsent:
    """A consent past its expiry whose grants the sweep has still to end, and its patient's
    organization (whose own staff never needed the consent)."""

    consent: Consent
    patient_organization_id: int


@dataclass(frozen=True)
class ExternalCoverage:
    """An external SMS participant still in a conversation, and the consent that let them in."""

    participant_id: int
    conversation_id: int
    phone_number: str
    organization_id: int | None
    chat_user_id: str


@dataclass(frozen=True)
class BreakGlassSession:
    """Emergency access one clinician opened to one patient, until ``expires_at``.

    ``reviewed_at``, ``reviewed_by`` and ``review_note`` are the review of the organization the
    session was read for (the patient's, or the clinician's when another): each organization reviews
    a session on its own, and neither sees the other's review."""

    id: int
    user_id: int
    organization_id: int
    patient_id: int
    patient_organization_id: int
    reason: str
    opened_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None = None
    reviewed_by: int | None = None
    review_note: str | None = None

    def is_open(self, now: datetime) -> bool:
        return self.opened_at <= now < self.expires_at


class BreakGlassRepository(Protocol):
    async def add(
        self, *, user_id: int, organization_id: int, patient_id: int, reason: str, expires_at: datetime
    ) -> BreakGlassSession: ...

    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        """The id of the user's emergency session for the patient that is open at ``at``, if any."""
        ...

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[BreakGlassSession]:
        """Sessions opened by the organization's staff or on its patients, newest first, each with
        that organization's own review of it (none while it has not reviewed it)."""
        ...

    async def get(self, session_id: int, organization_id: int) -> BreakGlassSession | None:
        """One session by id, whatever its organization (the workflow decides who may see it), with
        ``organization_id``'s own review of it, if any."""
        ...

    async def mark_reviewed(
        self, session_id: int, organization_id: int, *, by: int, note: str, at: datetime
    ) -> bool:
        """Record ``organization_id``'s review of a session it has not reviewed yet; False if it
        already has (another organization's review of the same session is no bar)."""
        ...


class ContactDirectory(Protocol):
    """Organizations' directories of external phone numbers, in the workflow's transaction."""

    async def add(
        self, organization_id: int, phone_number: str, name: str, added_by: int
    ) -> OrganizationContact:
        """Insert; raises :class:`engine.errors.Conflict` if the number is listed already."""
        ...

    async def list(self, organization_id: int) -> list[OrganizationContact]: ...

    async def remove(self, organization_id: int, contact_id: int) -> bool:
        """Delete the organization's entry; False if it has no such entry."""
        ...
