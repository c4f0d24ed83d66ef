"""Table models of identity: organizations, users, and the login throttle's counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    String,
    text,
)
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp


class OrganizationRow(SQLModel, table=True):
    __tablename__ = "organizations"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    self_registration: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    created_at: datetime = timestamp()


class UserRow(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = foreign_key("organizations.id")
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    first_name: str = Field(sa_column=Column(String(100), nullable=False))
    last_name: str = Field(sa_column=Column(String(100), nullable=False))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    is_active: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    # Opaque id used for the chat provider: never PII.
    chat_user_id: str = Field(sa_column=Column(String(80), nullable=False, unique=True))
    created_at: datetime = timestamp()
    # A self-registered account waits for an admin's approval (auth.require_approval).
    pending_approval: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    # Access tokens issued before this moment are refused (logout, deactivation, revoked sessions).
    sessions_valid_after: datetime | None = timestamp(nullable=True, default_now=False)
    # The staff member's registered phone (E.164) for urgent-message text alerts, which never carry
    # clinical content (migration 0019); none: they get no text.
    alert_phone: str | None = Field(sa_column=Column(String(20), nullable=True))

    __table_args__ = (
        CheckConstraint(
            "role IN ('peer_support','care_team_member','admin','compliance_officer','auditor')", name="role"
        ),
    )


class LoginThrottleRow(SQLModel, table=True):
    """Failed logins per account (``account:<keyed email hash>``) or source (``address:<ip>``, an IPv6
    address by its /64: engine/sources.py); registrations per source (``registration:<ip>``) and
    notices per account (``notice:<keyed email hash>``), paced the same way."""

    __tablename__ = "login_throttles"

    key: str = Field(sa_column=Column(String(100), primary_key=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    last_failure_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    blocked_until: datetime | None = timestamp(nullable=True, default_now=False)
    # Set once the account reached auth.lockout_failures: only an admin's unlock clears it.
    locked_at: datetime | None = timestamp(nullable=True, default_now=False)
