"""``GET /api/patients/{id}`` on its own unit of work (integrations/db/patient_reads.py: the relation
and the record in one statement, the audit record in another), held to the general unit of work on
the real app and PostgreSQL: for the same request, the same answer and the same stored audit rows,
column for column (the tamper-evident chain hashes these columns), and no record without its audit
row.

Each scenario reads over HTTP (the app's path), then runs the same workflow for the same person
through the general unit of work (``Services.patient_reads`` unset), and compares what each stored
under its request id.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncpg
import pytest

from engine.errors import CaremsgError
from engine.model import Actor, Role
from engine.workflows.patients import get_patient
from handlers.schemas.patients import PatientPublic
from tests.support.api import Api, Person, new_request_id
from tests.support.database import audit_refuses

#: Columns that name the request or the moment, not what was decided: they differ between two reads.
_PER_REQUEST = {"id", "occurred_at", "request_id"}


async def _rows(db: asyncpg.Connection, request_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM audit_events WHERE request_id = $1 ORDER BY id", request_id)
    return [{k: v for k, v in dict(r).items() if k not in _PER_REQUEST} for r in rows]


async def _both(api: Api, db: asyncpg.Connection, who: Person, patient_id: int) -> tuple[int, Any, Any]:
    """Read over HTTP, then through the general unit of work as the same person; assert both stored
    the same audit rows and answered alike. Returns the HTTP status and body, and the stored rows."""
    fast_id = new_request_id()
    status, body = await api.call(
        "GET", f"/api/patients/{patient_id}", who, headers={"X-Request-ID": fast_id}
    )
    return await _held_to_general(api, db, who, patient_id, fast_id, status, body)


async def _held_to_general(
    api: Api, db: asyncpg.Connection, who: Person, patient_id: int, fast_id: str, status: int, body: Any
) -> tuple[int, Any, Any]:
    """The same read through the general unit of work, held to the HTTP read ``fast_id`` (which
    answered ``status`` and ``body``): the same stored rows and the same answer."""
    general_id = new_request_id()
    fast = await _rows(db, fast_id)
    assert fast, "the read is on record"
    actor = Actor(
        who.id,
        Role(who.role),
        who.organization_id,
        request_id=general_id,
        source_address=fast[0]["source_address"],
    )
    general_services = dataclasses.replace(api.services, patient_reads=None)
    try:
        answer: Any = PatientPublic.of(await get_patient(general_services, actor, patient_id)).model_dump(
            by_alias=True, mode="json"
        )
        general_status = 200
    except CaremsgError as error:
        answer = error.code
        general_status = {"forbidden": 403, "not_found": 404, "service_unavailable": 503}[error.code]
    assert await _rows(db, general_id) == fast
    assert status == general_status
    if status == 200:
        assert body == answer
    return status, body, fast


async def _clinic(api: Api) -> tuple[int, Person, int]:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    return org, nurse, await api.patient(nurse)


async def test_a_care_team_member_reads_the_record_with_the_same_allow_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    _, nurse, patient_id = await _clinic(api)

    status, body, rows = await _both(api, db, nurse, patient_id)

    assert (status, body["id"]) == (200, patient_id)
    assert [(r["workflow"], r["decision"], r["outcome"]) for r in rows] == [
        ("patient.read", "allow", "success")
    ]


async def test_a_colleague_off_the_care_team_gets_the_same_403_and_denial_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    org, _, patient_id = await _clinic(api)
    colleague = await api.person("care_team_member", org)

    status, body, rows = await _both(api, db, colleague, patient_id)

    assert (status, body["reason"]) == (403, "not_on_care_team")
    assert [(r["decision"], r["outcome"]) for r in rows] == [("deny", "denied")]


async def test_someone_with_no_relation_gets_the_same_404_and_the_real_reason_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    _, _, patient_id = await _clinic(api)
    stranger = await api.person("care_team_member", await api.organization())

    status, _, rows = await _both(api, db, stranger, patient_id)

    assert status == 404
    row, lookup = rows
    assert (row["decision"], row["outcome"]) == ("deny", "denied")
    assert '"answered": "not_found"' in row["details"]
    # What the stranger's organization sees instead: the lookup an id that does not exist leaves.
    assert (lookup["event"], lookup["reason"], lookup["patient_id"]) == ("lookup", "not_found", None)


async def test_a_patient_that_does_not_exist_is_the_same_404_with_the_same_failed_lookup_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    _, nurse, _ = await _clinic(api)

    status, _, rows = await _both(api, db, nurse, 2_000_000_000)

    assert status == 404
    assert [(r["event"], r["outcome"], r["reason"]) for r in rows] == [("lookup", "failure", "not_found")]


@pytest.mark.parametrize("exists", [True, False], ids=["existing patient", "missing patient"])
async def test_a_role_that_may_never_read_patients_is_refused_alike_on_both_paths(
    api: Api, db: asyncpg.Connection, exists: bool
) -> None:
    org, _, patient_id = await _clinic(api)
    auditor = await api.person("auditor", org)

    status, body, rows = await _both(api, db, auditor, patient_id if exists else 2_000_000_000)

    assert (status, body["reason"]) == (403, "role_not_permitted")
    assert rows[-1]["reason"] == "role_not_permitted"


async def test_break_glass_reads_with_the_same_session_and_flag_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    org, _, patient_id = await _clinic(api)
    colleague = await api.person("care_team_member", org)
    status, session = await api.call(
        "POST",
        f"/api/patients/{patient_id}/break-glass",
        colleague,
        json={"reason": "Unresponsive patient in the ED, care team unreachable"},
    )
    assert status == 201, session

    status, _, rows = await _both(api, db, colleague, patient_id)

    assert status == 200
    [row] = rows
    assert row["break_glass"] is True
    assert f'"break_glass_session_id": {session["id"]}' in row["details"]


async def test_a_read_whose_audit_record_cannot_be_stored_discloses_nothing_on_either_path(
    api: Api, db: asyncpg.Connection
) -> None:
    _, nurse, patient_id = await _clinic(api)

    async with audit_refuses(db, "NEW.workflow = 'patient.read' AND NEW.outcome = 'success'"):
        status, body, rows = await _both(api, db, nurse, patient_id)

    assert status == 503
    assert "John" not in str(body)
    assert [(r["decision"], r["outcome"]) for r in rows] == [("allow", "failure")]


async def test_concurrent_reads_each_store_the_same_rows_as_the_general_path(
    api: Api, db: asyncpg.Connection
) -> None:
    """Reads at the same moment share their audit statement (integrations/db/audit_batch.py); each
    read's rows are still its own and the general path's, column for column."""
    _, nurse, patient_id = await _clinic(api)
    ids = [new_request_id() for _ in range(8)]

    answers = await asyncio.gather(
        *(
            api.call("GET", f"/api/patients/{patient_id}", nurse, headers={"X-Request-ID": request_id})
            for request_id in ids
        )
    )

    for request_id, (status, body) in zip(ids, answers, strict=True):
        assert (status, body["id"]) == (200, patient_id)
        _, _, rows = await _held_to_general(api, db, nurse, patient_id, request_id, status, body)
        assert [(r["decision"], r["outcome"]) for r in rows] == [("allow", "success")]


async def test_concurrent_reads_whose_records_cannot_be_stored_each_answer_503_and_disclose_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    _, nurse, patient_id = await _clinic(api)
    ids = [new_request_id() for _ in range(8)]

    async with audit_refuses(db, "NEW.workflow = 'patient.read' AND NEW.outcome = 'success'"):
        answers = await asyncio.gather(
            *(
                api.call("GET", f"/api/patients/{patient_id}", nurse, headers={"X-Request-ID": request_id})
                for request_id in ids
            )
        )

    assert [status for status, _ in answers] == [503] * len(ids)
    assert "John" not in str(answers)
    assert "Smith" not in str(answers)
    for request_id in ids:
        assert [(r["decision"], r["outcome"]) for r in await _rows(db, request_id)] == [("allow", "failure")]
