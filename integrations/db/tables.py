"""SQLModel table models. They stay in this adapter: repositories turn rows into engine types.

Alembic owns the schema (migrations/); nothing here is ever created with ``create_all()``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import conv
from sqlmodel import Field, SQLModel

# A constraint naming convention so Alembic migrations name every constraint predictably.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata


def _ts(*, nullable: bool = False, default_now: bool = True) -> Any:
    return Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None
        )
    )


def _fk(target: str, *, nullable: bool = False, ondelete: str | None = None, index: bool = True) -> Any:
    return Field(
        sa_column=Column(Integer, ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index)
    )


class OrganizationRow(SQLModel, table=True):
    __tablename__ = "organizations"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    self_registration: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    created_at: datetime = _ts()


class ComplianceGroupRow(SQLModel, table=True):
    __tablename__ = "compliance_groups"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str | None = Field(sa_column=Column(String(2000), nullable=True))
    organization_id: int = _fk("organizations.id")
    created_by: int = _fk("users.id", index=False)
    created_at: datetime = _ts()

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
    """A compliance group its owner shared with another organization by name (issue 9, item 11): that
    organization's compliance officers may then name the group in their own patients' consents."""

    __tablename__ = "compliance_group_shares"

    group_id: int = Field(
        sa_column=Column(Integer, ForeignKey("compliance_groups.id", ondelete="CASCADE"), primary_key=True)
    )
    organization_id: int = Field(
        sa_column=Column(Integer, ForeignKey("organizations.id"), primary_key=True, index=True)
    )
    shared_by: int = _fk("users.id", index=False)
    shared_at: datetime = _ts()


class UserRow(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = _fk("organizations.id")
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    first_name: str = Field(sa_column=Column(String(100), nullable=False))
    last_name: str = Field(sa_column=Column(String(100), nullable=False))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    is_active: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    # Opaque id used for the chat provider: never PII.
    chat_user_id: str = Field(sa_column=Column(String(80), nullable=False, unique=True))
    created_at: datetime = _ts()
    # A self-registered account waits for an admin's approval (auth.require_approval).
    pending_approval: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    # Access tokens issued before this moment are refused (logout, deactivation, revoked sessions).
    sessions_valid_after: datetime | None = _ts(nullable=True, default_now=False)

    __table_args__ = (
        CheckConstraint(
            "role IN ('peer_support','care_team_member','admin','compliance_officer','auditor')", name="role"
        ),
    )


class LoginThrottleRow(SQLModel, table=True):
    """Failed logins per account (``account:<keyed email hash>``) or source (``address:<ip>``)."""

    __tablename__ = "login_throttles"

    key: str = Field(sa_column=Column(String(100), primary_key=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    last_failure_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    blocked_until: datetime | None = _ts(nullable=True, default_now=False)
    # Set once the account reached auth.lockout_failures: only an admin's unlock clears it.
    locked_at: datetime | None = _ts(nullable=True, default_now=False)


class PatientRow(SQLModel, table=True):
    __tablename__ = "patients"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = _fk("organizations.id")
    first_name: str = Field(sa_column=Column(String(100), nullable=False))
    last_name: str = Field(sa_column=Column(String(100), nullable=False))
    date_of_birth: date | None = Field(sa_column=Column(Date, nullable=True))
    risk_level: str = Field(sa_column=Column(String(16), nullable=False))
    created_by: int = _fk("users.id", index=False)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()

    __table_args__ = (CheckConstraint("risk_level IN ('low','medium','high','critical')", name="risk_level"),)


class CareTeamRow(SQLModel, table=True):
    __tablename__ = "care_teams"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(sa_column=Column(Integer, ForeignKey("patients.id"), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    organization_id: int = _fk("organizations.id")
    created_by: int = _fk("users.id", index=False)
    created_at: datetime = _ts()


class CareTeamMemberRow(SQLModel, table=True):
    __tablename__ = "care_team_members"

    care_team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("care_teams.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), primary_key=True, index=True))
    added_by: int = _fk("users.id", index=False)
    added_at: datetime = _ts()


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


class ConsentRow(SQLModel, table=True):
    __tablename__ = "consents"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patients.id")
    recipient_type: str = Field(sa_column=Column(String(32), nullable=False))
    organization_id: int | None = _fk("organizations.id", nullable=True)
    compliance_group_id: int | None = _fk("compliance_groups.id", nullable=True)
    external_phone_number: str | None = Field(sa_column=Column(String(20), nullable=True))
    external_name: str | None = Field(sa_column=Column(String(200), nullable=True))
    purpose: str = Field(sa_column=Column(String(32), nullable=False))
    effective_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True, default_now=False)
    recorded_by: int = _fk("users.id", index=False)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True, default_now=False)
    revoked_by: int | None = _fk("users.id", nullable=True, index=False)
    revocation_reason: str | None = Field(sa_column=Column(String(500), nullable=True))
    # Which data and actions the consent discloses (issue 4): read, message, sms; write (issue 9).
    scope: list[str] = Field(
        sa_column=Column(ARRAY(String(16)), nullable=False, server_default=text("'{read,message,sms}'"))
    )
    # Recipient, scope and purpose packed as the in-memory consent index stores them, computed by
    # PostgreSQL on write so loading a million consents does not evaluate it a million times.
    index_key: int | None = Field(sa_column=Column(BigInteger, Computed(CONSENT_INDEX_KEY, persisted=True)))

    __table_args__ = (
        CheckConstraint(
            "cardinality(scope) >= 1 AND scope <@ '{read,message,sms,write}'::varchar[]", name="scope"
        ),
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


class ConversationRow(SQLModel, table=True):
    __tablename__ = "conversations"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patients.id")
    title: str = Field(sa_column=Column(String(200), nullable=False))
    channel_url: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    # pending until the relay has created the chat channel; messages wait for "ready".
    channel_state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'pending'")))
    organization_id: int = _fk("organizations.id", index=False)
    created_by: int = _fk("users.id", index=False)
    created_at: datetime = _ts()

    __table_args__ = (CheckConstraint("channel_state IN ('pending','ready','failed')", name="channel_state"),)


class ConversationMemberRow(SQLModel, table=True):
    __tablename__ = "conversation_members"

    conversation_id: int = Field(
        sa_column=Column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), primary_key=True, index=True))
    added_at: datetime = _ts()


class ExternalParticipantRow(SQLModel, table=True):
    __tablename__ = "external_participants"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversations.id", ondelete="CASCADE")
    phone_number: str = Field(sa_column=Column(String(20), nullable=False))
    display_name: str = Field(sa_column=Column(String(200), nullable=False))
    organization_id: int | None = _fk("organizations.id", nullable=True, index=False)
    chat_user_id: str = Field(sa_column=Column(String(80), nullable=False, unique=True))
    consent_id: int = _fk("consents.id", index=False)
    added_at: datetime = _ts()
    # Set when the consent that let this participant in is revoked (issue 4): SMS must stop.
    removed_at: datetime | None = _ts(nullable=True, default_now=False)
    # Which of the number's conversations a reply means ("#2 ..."): 1, 2, 3... per phone number, in
    # order of admission, never reused, so a code in an old text never points at another conversation.
    reply_code: int = Field(sa_column=Column(Integer, nullable=False))

    __table_args__ = (
        UniqueConstraint(
            "conversation_id",
            "phone_number",
            name=conv("uq_external_participants_conversation_id_phone_number"),
        ),
        UniqueConstraint(
            "phone_number", "reply_code", name=conv("uq_external_participants_phone_number_reply_code")
        ),
    )


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversations.id")
    sender_id: int = _fk("users.id", index=False)
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'queued'")))
    chat_message_id: int | None = Field(sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _ts()

    __table_args__ = (CheckConstraint("state IN ('queued','sent','delivered','failed')", name="state"),)


class OutboxRow(SQLModel, table=True):
    """Side effects on the chat provider, written in the same transaction as the action that causes them.

    The relay claims due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, so several instances can
    run it at once and a killed relay's rows are picked up again when the lease runs out.
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=Column(String(40), nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    message_id: int | None = _fk("messages.id", nullable=True)
    conversation_id: int | None = _fk("conversations.id", nullable=True)
    status: str = Field(sa_column=Column(String(16), nullable=False, server_default=text("'pending'")))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default=text("0")))
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = _ts(nullable=True, default_now=False)
    last_error: str | None = Field(sa_column=Column(String(200), nullable=True))
    created_at: datetime = _ts()
    done_at: datetime | None = _ts(nullable=True, default_now=False)

    __table_args__ = (
        CheckConstraint("status IN ('pending','done','failed')", name="status"),
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # The claim's "an earlier entry of this kind and conversation is still pending" probe, which
        # keeps a conversation's posts and its texts in order (migration 0014).
        Index(
            "ix_outbox_pending_in_order",
            "kind",
            "conversation_id",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        # The claim takes pending rows in id order (migration 0008).
        Index("ix_outbox_pending", "id", postgresql_where=text("status = 'pending'")),
    )


class AuditEventRow(SQLModel, table=True):
    """Append-only: the migration revokes UPDATE/DELETE and installs a trigger that refuses them."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    occurred_at: datetime = _ts()
    request_id: str | None = Field(sa_column=Column(String(64), nullable=True))
    actor_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    actor_role: str | None = Field(sa_column=Column(String(32), nullable=True))
    organization_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    source_address: str | None = Field(sa_column=Column(String(64), nullable=True))
    event: str = Field(sa_column=Column(String(40), nullable=False))
    workflow: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    resource_type: str | None = Field(sa_column=Column(String(32), nullable=True))
    resource_id: str | None = Field(sa_column=Column(String(64), nullable=True))
    patient_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    decision: str | None = Field(sa_column=Column(String(8), nullable=True))
    matched_rule: str | None = Field(sa_column=Column(String(300), nullable=True))
    reason: str | None = Field(sa_column=Column(String(64), nullable=True))
    policy_version: str | None = Field(sa_column=Column(String(32), nullable=True))
    purpose: str | None = Field(sa_column=Column(String(32), nullable=True))
    break_glass: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    details: dict[str, Any] = Field(
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    # Keyed hash (HMAC-SHA-256) of an identifier that must be searchable but never stored in clear,
    # such as the email of a failed login (issue 5).
    subject_hash: str | None = Field(sa_column=Column(String(64), nullable=True, index=True))

    __table_args__ = (
        CheckConstraint("decision IS NULL OR decision IN ('allow','deny')", name="decision"),
        CheckConstraint("outcome IN ('success','denied','failure')", name="outcome"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )


# Tables of each capability live in their own module; importing them registers them on `metadata`.
from integrations.db import tables_audit, tables_consents, tables_messaging  # noqa: E402, F401
