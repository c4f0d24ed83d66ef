"""A patient's records marked as including 42 CFR Part 2 records while a consent without the Part 2
elements is being recorded, against the real app and PostgreSQL.

Each commits wholly before the other: the consent is recorded first and the mark is refused (409
naming it), or the mark first and the consent is refused (422: it must carry the elements). Never
both: a consent without the elements left in force for a Part 2 patient. The consent is held (a
table lock of the test's own that only its insert needs) after it has read the patient's mark and
before it is stored, and the mark is asked for then.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tests.support.api import Api
from tests.support.database import table_held, waiting_on_a_lock
from tests.support.polling import eventually


async def test_a_part2_mark_asked_for_while_a_plain_consent_is_being_recorded_waits_and_is_refused(
    patient_api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    api = patient_api
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    recipient = await api.organization()
    patient_id = await api.patient(nurse)
    finished: list[str] = []

    async def record() -> tuple[int, Any]:
        body = {"patientId": patient_id, "purpose": "treatment", "organizationId": recipient}
        answer = await api.call("POST", "/api/consents", officer, json=body)
        finished.append("consent")
        return answer

    async def mark() -> tuple[int, Any]:
        answer = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"part2": True})
        finished.append("mark")
        return answer

    marking: asyncio.Task[tuple[int, Any]] | None = None
    async with table_held(db_pool, "consents"):
        recording = asyncio.create_task(record())
        await eventually(
            lambda: waiting_on_a_lock(db, "INSERT INTO consents"), "the consent to read the mark"
        )
        marking = asyncio.create_task(mark())

        async def marked_or_waiting() -> bool:
            assert marking is not None
            return marking.done() or await waiting_on_a_lock(db, "SELECT patients.id")

        await eventually(marked_or_waiting, "the mark to be set or to wait")
    recorded, consent = await recording
    marked, problem = await marking

    # Before the fix the mark committed while the consent waited, and the consent was stored after.
    assert (recorded, marked, finished) == (201, 409, ["consent", "mark"]), (consent, problem)
    assert problem["field"] == "part2"
    part2 = await db.fetchval("SELECT part2 FROM patients WHERE id = $1", patient_id)
    assert part2 is False


async def test_an_edit_clearing_the_mark_as_another_sets_it_is_decided_on_the_mark_set(
    patient_api: Api, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """A care-team member's edit carrying ``part2: false`` (a form read before the patient was
    marked) while another request's mark is being committed: the edit reads the mark once that
    commits, so taking it off is decided (403 for the care team), not done on the stale read."""
    api = patient_api
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    edit = {"riskLevel": "low", "part2": False}

    async with db_pool.acquire() as marker:
        marking = marker.transaction()
        await marking.start()
        await marker.execute("UPDATE patients SET part2 = true WHERE id = $1", patient_id)
        editing = asyncio.create_task(api.call("PUT", f"/api/patients/{patient_id}", nurse, json=edit))
        await eventually(lambda: waiting_on_a_lock(db), "the edit to wait for the mark's commit")
        await marking.commit()
    status, body = await editing

    # Before the fix the edit read the mark before it committed and then wrote part2 = false (200).
    assert (status, body.get("reason")) == (403, "role_not_permitted"), body
    assert await db.fetchval("SELECT part2 FROM patients WHERE id = $1", patient_id) is True
