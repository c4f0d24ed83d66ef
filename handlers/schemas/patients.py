"""Schemas of patients and their care teams."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from engine.model import (
    CareTeam,
    Patient,
    RiskLevel,
    Role,
)
from handlers.schemas import (
    BirthDate,
    Id,
    Name,
    Request,
    Response,
    Title,
)

# --- patients & care teams ------------------------------------------------------------------------


_PART2 = (
    "The patient's records include 42 CFR Part 2 records: every consent recorded for them must be a"
    " Part 2 consent (`part2` with the elements of 42 CFR 2.31), and disclosures under it carry the"
    " 2.32 notice."
)


class PatientCreate(Request):
    first_name: Name
    last_name: Name
    risk_level: RiskLevel
    date_of_birth: BirthDate | None = None
    part2: bool = Field(False, description=_PART2)


def _not_null(schema: dict[str, Any]) -> None:
    """Document an optional field whose null is refused: drop the null branch and the null default."""
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    schema.pop("default", None)


class PatientUpdate(Request):
    # Absent means unchanged; null is refused for these three, so the schema does not offer it.
    first_name: Name | None = Field(None, json_schema_extra=_not_null)
    last_name: Name | None = Field(None, json_schema_extra=_not_null)
    risk_level: RiskLevel | None = Field(None, json_schema_extra=_not_null)
    date_of_birth: BirthDate | None = Field(None, description="Calendar date; null clears it.")
    part2: bool | None = Field(None, description=_PART2, json_schema_extra=_not_null)

    @model_validator(mode="after")
    def _something(self) -> PatientUpdate:
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self

    @field_validator("first_name", "last_name", "risk_level", "part2")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs per field, so the 422 names the field (dateOfBirth alone may be cleared with null).
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class PatientPublic(Response):
    id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    organization_id: int
    created_by: int
    created_at: datetime
    updated_at: datetime
    part2: bool = Field(description=_PART2)

    @classmethod
    def of(cls, p: Patient) -> PatientPublic:
        return cls(
            id=p.id,
            first_name=p.first_name,
            last_name=p.last_name,
            date_of_birth=p.date_of_birth,
            risk_level=p.risk_level,
            organization_id=p.organization_id,
            created_by=p.created_by,
            created_at=p.created_at,
            updated_at=p.updated_at,
            part2=p.part2,
        )


class CareTeamCreate(Request):
    patient_id: Id
    name: Title = "Care team"


class CareTeamMemberAdd(Request):
    user_id: Id


class CareTeamMemberPublic(Response):
    user_id: int
    role: Role
    organization_id: int
    added_at: datetime


class CareTeamPublic(Response):
    id: int
    patient_id: int
    name: str
    organization_id: int
    created_at: datetime
    members: list[CareTeamMemberPublic]

    @classmethod
    def of(cls, team: CareTeam) -> CareTeamPublic:
        return cls(
            id=team.id,
            patient_id=team.patient_id,
            name=team.name,
            organization_id=team.organization_id,
            created_at=team.created_at,
            members=[
                CareTeamMemberPublic(
                    user_id=m.user_id, role=m.role, organization_id=m.organization_id, added_at=m.added_at
                )
                for m in team.members
            ],
        )
