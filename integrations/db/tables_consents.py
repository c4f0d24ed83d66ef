"""Table models for policy, consent lifecycle and break-the-glass (issue 4).

Registered on the shared metadata by importing integrations.db.tables (Alembic sees them).

- ``consent_changes``: one row per change to a consent (recorded, revoked), written in the same
  transaction as the change, numbered by a ``bigserial``. Instances keep their in-memory consent
  index current from ``pg_notify`` messages carrying that number, and catch up from this table
  when a number is missing. It holds ids only, never PHI.
- ``break_glass_sessions``: emergency access a clinician opened to one patient, with the reason,
  until it expires; the compliance review list reads it.
- ``organization_contacts``: an organization's directory of external phone numbers, kept by its
  admins. A consent naming an organization lets one of its people be texted only if their number is
  in this directory (issue 9): a caller's word that a number belongs to an organization counts for
  nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp


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
