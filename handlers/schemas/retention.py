"""Request and response schemas of legal holds (retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from engine.retention import LegalHold
from handlers.schemas import Id, Request, Response

HoldReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class LegalHoldCreate(Request):
    patient_id: Id | None = Field(None, description="Hold every message about this patient.")
    conversation_id: Id | None = Field(None, description="Or hold this one conversation's messages.")
    reason: HoldReason = Field(
        description="Why (a matter, a request); kept with the hold, not in the audit trail."
    )


class LegalHoldLift(Request):
    reason: HoldReason = Field(description="Why the hold ends; kept with the hold.")


class LegalHoldQuery(Request):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=False, frozen=True)
    active: bool = Field(False, description="Only the holds that still last.")


class LegalHoldPublic(Response):
    id: int
    patient_id: int | None = Field(description="The patient held (null for a hold on a conversation).")
    conversation_id: int | None = Field(description="The conversation held (null for a hold on a patient).")
    subject_patient_id: int = Field(description="The patient whose record it concerns.")
    reason: str = Field(description="Why it was placed, as the officer said.")
    placed_by: int = Field(description="Who placed it (a user id).")
    placed_at: datetime = Field(description="When it was placed.")
    active: bool = Field(description="True while it lasts: the retention sweep keeps the held content.")
    lifted_by: int | None = Field(None, description="Who lifted it (a user id).")
    lifted_at: datetime | None = Field(None, description="When it was lifted.")
    lift_reason: str | None = Field(None, description="Why it was lifted.")

    @classmethod
    def of(cls, h: LegalHold) -> LegalHoldPublic:
        return cls(
            id=h.id,
            patient_id=h.patient_id,
            conversation_id=h.conversation_id,
            subject_patient_id=h.subject_patient_id,
            reason=h.reason,
            placed_by=h.placed_by,
            placed_at=h.placed_at,
            active=h.active,
            lifted_by=h.lifted_by,
            lifted_at=h.lifted_at,
            lift_reason=h.lift_reason,
        )


class LegalHoldList(Response):
    holds: list[LegalHoldPublic] = Field(description="The holds, newest first.")
