"""Patients and their care teams over HTTP."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import patients
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas import ListQuery, PageOf
from handlers.schemas.patients import (
    CareTeamCreate,
    CareTeamMemberAdd,
    CareTeamPublic,
    PatientCreate,
    PatientPublic,
    PatientUpdate,
)

# --- patients & care teams ------------------------------------------------------------------------


async def create_patient(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, PatientCreate)
    cmd = patients.RegisterPatient(
        body.first_name, body.last_name, body.risk_level, body.date_of_birth, body.part2
    )
    return respond(PatientPublic.of(await patients.register_patient(services(request), actor, cmd)), 201)


async def list_patients(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await patients.list_patients(services(request), actor, q.cursor, q.limit)
    return respond(
        PageOf[PatientPublic](items=[PatientPublic.of(p) for p in page.items], next_cursor=page.next_cursor)
    )


async def get_patient(request: web.Request, actor: Actor) -> web.Response:
    patient = await patients.get_patient(services(request), actor, path_id(request, "id"))
    return respond(PatientPublic.of(patient))


async def update_patient(request: web.Request, actor: Actor) -> web.Response:
    patient_id = path_id(request, "id")
    body = await parse(request, PatientUpdate)
    cmd = patients.UpdatePatient(patient_id, body.changes())
    return respond(PatientPublic.of(await patients.update_patient(services(request), actor, cmd)))


async def create_care_team(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, CareTeamCreate)
    team, created = await patients.create_care_team(services(request), actor, body.patient_id, body.name)
    return respond(CareTeamPublic.of(team), 201 if created else 200)


async def get_patient_care_team(request: web.Request, actor: Actor) -> web.Response:
    team = await patients.get_care_team(services(request), actor, path_id(request, "patientId"))
    return respond(CareTeamPublic.of(team))


async def add_care_team_member(request: web.Request, actor: Actor) -> web.Response:
    team_id = path_id(request, "id")
    body = await parse(request, CareTeamMemberAdd)
    team, added = await patients.add_care_team_member(services(request), actor, team_id, body.user_id)
    return respond(CareTeamPublic.of(team), 201 if added else 200)


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/patients",
        create_patient,
        "createPatient",
        "Register a patient",
        "patients",
        PatientCreate,
        PatientPublic,
        201,
        errors=(400, 401, 403, 422),
    ),
    Endpoint(
        "GET",
        "/api/patients",
        list_patients,
        "listPatients",
        "Patients on one's care teams",
        "patients",
        response=PageOf[PatientPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "GET",
        "/api/patients/{id}",
        get_patient,
        "getPatient",
        "A patient's record",
        "patients",
        response=PatientPublic,
    ),
    Endpoint(
        "PUT",
        "/api/patients/{id}",
        update_patient,
        "updatePatient",
        "Change a patient's record",
        "patients",
        PatientUpdate,
        PatientPublic,
        errors=(400, 401, 403, 404, 409, 422),
        description="409 (`consents_not_part2`, field `part2`) when `part2` is set while consents recorded"
        " without the elements of 42 CFR 2.31 are in force or pending: the answer names them by id; revoke"
        " them (and record them again as Part 2 consents) first.",
    ),
    Endpoint(
        "POST",
        "/api/care-teams",
        create_care_team,
        "createCareTeam",
        "Create a patient's care team",
        "care-teams",
        CareTeamCreate,
        CareTeamPublic,
        201,
        description="Idempotent: 201 with the new team, or 200 with the patient's existing team unchanged "
        "(every patient registered through the API has one from the start).",
    ),
    Endpoint(
        "GET",
        "/api/patients/{patientId}/care-team",
        get_patient_care_team,
        "getPatientCareTeam",
        "A patient's care team",
        "care-teams",
        response=CareTeamPublic,
    ),
    Endpoint(
        "POST",
        "/api/care-teams/{id}/members",
        add_care_team_member,
        "addCareTeamMember",
        "Add a member to a care team",
        "care-teams",
        CareTeamMemberAdd,
        CareTeamPublic,
        201,
        description="201 when the person was added; 200 with the team unchanged if a member already.",
    ),
]
