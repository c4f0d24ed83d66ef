"""Table models of patients and their care teams."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Integer,
    String,
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
