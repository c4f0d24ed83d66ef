"""Table models of patients and their care teams, the care team's on-call roster and staff away
with a delegate.

- ``on_call_shifts``: a window (UTC, ``starts_at`` inclusive, ``ends_at`` exclusive) in which one
  member holds the care team's on-call role. Overlaps and gaps are the roster workflow's to report;
  the table only refuses an empty or reversed window.
- ``staff_away``: a staff member away from ``starts_at`` until ``ends_at`` (open-ended while null),
  with the colleague who takes their urgent messages meanwhile.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    false,
)
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp


class PatientRow(SQLModel, table=True):
    __tablename__ = "patients"

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = foreign_key("organizations.id")
    first_name: str = Field(sa_column=Column(String(100), nullable=False))
    last_name: str = Field(sa_column=Column(String(100), nullable=False))
    date_of_birth: date | None = Field(sa_column=Column(Date, nullable=True))
    risk_level: str = Field(sa_column=Column(String(16), nullable=False))
    created_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()
    updated_at: datetime = timestamp()
    #: The patient's records include 42 CFR Part 2 records: every consent for them must be a Part 2
    #: consent (with the elements of 42 CFR 2.31).
    part2: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))

    __table_args__ = (CheckConstraint("risk_level IN ('low','medium','high','critical')", name="risk_level"),)


class CareTeamRow(SQLModel, table=True):
    __tablename__ = "care_teams"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(sa_column=Column(Integer, ForeignKey("patients.id"), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    organization_id: int = foreign_key("organizations.id")
    created_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()


class CareTeamMemberRow(SQLModel, table=True):
    __tablename__ = "care_team_members"

    care_team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("care_teams.id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), primary_key=True, index=True))
    added_by: int = foreign_key("users.id", index=False)
    added_at: datetime = timestamp()


class OnCallShiftRow(SQLModel, table=True):
    __tablename__ = "on_call_shifts"

    id: int | None = Field(default=None, primary_key=True)
    care_team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("care_teams.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: int = foreign_key("users.id")
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_by: int = foreign_key("users.id", index=False)
    created_at: datetime = timestamp()

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window"),
        # "Who is on call at t" and "next": the team's shifts in time order.
        Index("ix_on_call_shifts_care_team_id_starts_at", "care_team_id", "starts_at"),
    )


class StaffAwayRow(SQLModel, table=True):
    __tablename__ = "staff_away"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = foreign_key("users.id")
    delegate_id: int = foreign_key("users.id", index=False)
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime | None = Field(sa_column=Column(DateTime(timezone=True), nullable=True))
    created_at: datetime = timestamp()

    __table_args__ = (
        CheckConstraint("delegate_id <> user_id", name="delegate_not_self"),
        CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="window"),
    )
