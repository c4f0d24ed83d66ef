"""Table models of consents: consents and their change log, compliance groups, break-the-glass
sessions, and organizations' contact directories.

- ``consent_changes``: one row per change to a consent (recorded, revoked), written in the same
  transaction as the change, numbered by a ``bigserial``. Instances keep their in-memory consent
  index current from ``pg_notify`` messages carrying that number, and catch up from this table
  when a number is missing. It holds ids only, never PHI.
- ``break_glass_sessions``: emergency access a clinician opened to one patient, with the reason,
  until it expires; the compliance review list reads it.
- ``break_glass_reviews``: each organization's own review of a session (the patient's, and the
  clinician's when another): who, when, the note; once per organization (migration 0031).
- ``organization_contacts``: an organization's directory of external phone numbers, kept by its
  admins. A consent naming an organization lets one of its people be texted only if their number is
  in this directory: a caller's word that a number belongs to an organization counts for
  nothing.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import conv
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp


class ComplianceGroupRow(SQLModel, table=True):
    __tablename__ = "compliance_groups"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str | None = Field(sa_column=Column(String(2000), nullable=True))
    # No index of its own: uq_compliance_groups_organization_id_name leads with it (migration 0030).
    organization_id: int = foreign_key("organizations.id", index=False)
    created_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()

    __table_args__ = (
        UniqueConstraint("organization_id", "name", name=conv("uq_compliance_groups_organization_id_name")),
    )


class ComplianceGroupMemberRow(SQLModel, table=True):
    __tablename__ = "compliance_group_members"

    group_id: int = Field(
        sa_column=Column(Integer, ForeignKey("compliance_groups.id", ondelete="CASCADE"), primary_key=True)
    )
    organization_id: int = Field(
        sa_column=Column(Integer, ForeignKey("organizations.id"), primary_key=True, index=True)
    )


class ComplianceGroupShareRow(SQLModel, table=True):
    """A compliance group its owner shared with another organization by name: that
    organization's compliance officers may then name the group in their own patients' consents."""

    __tablename__ = "compliance_group_shares"

    group_id: int = Field(
        sa_column=Column(Integer, ForeignKey("compliance_groups.id", ondelete="CASCADE"), primary_key=True)
    )
    organization_id: int = Field(
        sa_column=Column(Integer, ForeignKey("organizations.id"), primary_key=True, index=True)
    )
    shared_by: int = foreign_key("users.id", index=False)
    shared_at: datetime = timestamp()


#: Keep in step with engine.consent_index (SCOPE_BITS, PURPOSE_CODES and the layout of an entry).
CONSENT_INDEX_KEY = (
    "coalesce(organization_id, compliance_group_id)::bigint"
    " | CASE WHEN recipient_type = 'compliance_group' THEN 2147483648 ELSE 0 END"
    " | ((CASE WHEN 'read' = ANY(scope) THEN 1 ELSE 0 END"
    " | CASE WHEN 'message' = ANY(scope) THEN 2 ELSE 0 END"
    " | CASE WHEN 'sms' = ANY(scope) THEN 4 ELSE 0 END"
    " | CASE WHEN 'write' = ANY(scope) THEN 8 ELSE 0 END)::bigint << 32)"
    " | ((CASE purpose WHEN 'treatment' THEN 0 WHEN 'care_coordination' THEN 1"
    " WHEN 'payment' THEN 2 ELSE 3 END)::bigint << 36)"
)


#: A Part 2 consent holds every element of 42 CFR 2.31, an expiry date or an expiry event included.
PART2_ELEMENTS = (
    "NOT part2 OR (part2_discloser IS NOT NULL AND part2_information IS NOT NULL"
    " AND part2_signed_by IS NOT NULL AND part2_signed_on IS NOT NULL"
    " AND (expires_at IS NOT NULL OR part2_expiry_event IS NOT NULL))"
)


class ConsentRow(SQLModel, table=True):
    __tablename__ = "consents"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = foreign_key("patients.id")
    recipient_type: str = Field(sa_column=Column(String(32), nullable=False))
    organization_id: int | None = foreign_key("organizations.id", nullable=True)
    compliance_group_id: int | None = foreign_key("compliance_groups.id", nullable=True)
    external_phone_number: str | None = Field(sa_column=Column(String(20), nullable=True))
    external_name: str | None = Field(sa_column=Column(String(200), nullable=True))
    purpose: str = Field(sa_column=Column(String(32), nullable=False))
    effective_at: datetime = timestamp()
    expires_at: datetime | None = timestamp(nullable=True, default_now=False)
    recorded_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()
    revoked_at: datetime | None = timestamp(nullable=True, default_now=False)
    revoked_by: int | None = foreign_key("users.id", nullable=True, index=False)
    revocation_reason: str | None = Field(sa_column=Column(String(500), nullable=True))
    # Which data and actions the consent discloses: read, message, sms; write.
    scope: list[str] = Field(
        sa_column=Column(ARRAY(String(16)), nullable=False, server_default=text("'{read,message,sms}'"))
    )
    # Recipient, scope and purpose packed as the in-memory consent index stores them, computed by
    # PostgreSQL on write so loading a million consents does not evaluate it a million times.
    index_key: int | None = Field(sa_column=Column(BigInteger, Computed(CONSENT_INDEX_KEY, persisted=True)))
    # When the expiry sweep ended what the consent granted (channel memberships, SMS admissions);
    # null until then. Access itself ends at expires_at without it: decisions compare the time.
    expiry_swept_at: datetime | None = timestamp(nullable=True, default_now=False)
    # 42 CFR Part 2: set with the 2.31 elements below when the consent covers Part 2 records.
    part2: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    part2_discloser: str | None = Field(sa_column=Column(String(200), nullable=True))
    part2_information: str | None = Field(sa_column=Column(String(500), nullable=True))
    part2_expiry_event: str | None = Field(sa_column=Column(String(200), nullable=True))
    part2_signed_by: str | None = Field(sa_column=Column(String(200), nullable=True))
    part2_signed_on: date | None = Field(sa_column=Column(Date, nullable=True))

    __table_args__ = (
        # The expiry sweep's claim: expired, unrevoked consents it has not swept yet.
        Index(
            "ix_consents_expiry_sweep",
            "expires_at",
            postgresql_where=text(
                "expiry_swept_at IS NULL AND revoked_at IS NULL AND expires_at IS NOT NULL"
            ),
        ),
        CheckConstraint(
            "cardinality(scope) >= 1 AND scope <@ '{read,message,sms,write}'::varchar[]", name="scope"
        ),
        CheckConstraint(PART2_ELEMENTS, name="part2_elements"),
        CheckConstraint(
            "(recipient_type = 'organization' AND organization_id IS NOT NULL AND compliance_group_id IS NULL"
            " AND external_phone_number IS NULL)"
            " OR (recipient_type = 'compliance_group' AND compliance_group_id IS NOT NULL"
            " AND organization_id IS NULL AND external_phone_number IS NULL)"
            " OR (recipient_type = 'external' AND external_phone_number IS NOT NULL"
            " AND compliance_group_id IS NULL)",
            name="one_recipient",
        ),
        CheckConstraint(
            "purpose IN ('treatment','care_coordination','payment','healthcare_operations')", name="purpose"
        ),
        CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="expires_after_effective"),
        Index("ix_consents_external_phone", "external_phone_number"),
    )


class ConsentChangeRow(SQLModel, table=True):
    __tablename__ = "consent_changes"

    seq: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    consent_id: int = foreign_key("consents.id")
    patient_id: int = Field(sa_column=Column(Integer, nullable=False))
    op: str = Field(sa_column=Column(String(16), nullable=False))
    changed_at: datetime = timestamp()

    __table_args__ = (CheckConstraint("op IN ('recorded','revoked')", name="op"),)


class BreakGlassSessionRow(SQLModel, table=True):
    __tablename__ = "break_glass_sessions"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = foreign_key("users.id", index=False)
    organization_id: int = foreign_key("organizations.id")
    patient_id: int = foreign_key("patients.id", index=False)
    # The clinician's justification; shown to compliance reviewers, never logged.
    reason: str = Field(sa_column=Column(Text, nullable=False))
    opened_at: datetime = timestamp()
    expires_at: datetime = timestamp(default_now=False)

    __table_args__ = (
        CheckConstraint("expires_at > opened_at", name="expires_after_opened"),
        CheckConstraint("char_length(reason) >= 10", name="reason_length"),
        Index("ix_break_glass_sessions_user_patient", "user_id", "patient_id", "expires_at"),
    )


class BreakGlassReviewRow(SQLModel, table=True):
    """One organization's compliance review of an emergency session (migration 0031). The patient's
    organization reviews access to its patient, the clinician's reviews its own staff's use; each
    review is its own, so one never closes or shows the other. The note may describe the patient's
    circumstances: it is read only by that organization's compliance officers, never logged."""

    __tablename__ = "break_glass_reviews"

    session_id: int = Field(
        sa_column=Column(Integer, ForeignKey("break_glass_sessions.id"), primary_key=True)
    )
    organization_id: int = Field(sa_column=Column(Integer, ForeignKey("organizations.id"), primary_key=True))
    reviewed_by: int = foreign_key("users.id", index=False)
    reviewed_at: datetime = timestamp(default_now=False)
    note: str = Field(sa_column=Column(Text, nullable=False))

    __table_args__ = (CheckConstraint("char_length(note) >= 1", name="note_length"),)


class OrganizationContactRow(SQLModel, table=True):
    __tablename__ = "organization_contacts"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = foreign_key("organizations.id", index=False)
    phone_number: str = Field(sa_column=Column(String(20), nullable=False, index=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    added_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()

    __table_args__ = (
        UniqueConstraint("organization_id", "phone_number", name="uq_organization_contacts_number"),
    )


class Part2NoticeRow(SQLModel, table=True):
    """The 42 CFR 2.32 notice given in a conversation to one recipient organization's members, under
    Part 2 consent ``consent_id``, before message ``message_id`` (integrations/effects/messages.py):
    one per (conversation, organization), so it is never repeated. ``message_id`` is a plain number,
    not a foreign key, so the retention sweep deleting messages is not held up by it."""

    __tablename__ = "part2_notices"

    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    )
    organization_id: int = Field(sa_column=Column(Integer, ForeignKey("organizations.id"), primary_key=True))
    consent_id: int = foreign_key("consents.id", index=False)
    message_id: int = Field(sa_column=Column(Integer, nullable=False))
    sent_at: datetime = timestamp()
