"""The REST API. Each handler parses input, calls one engine workflow with the actor, and maps the
result to a public schema; the policy decision, the transaction and the audit happen in the engine."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import accounts, consents, conversations, identity, organizations, patients
from engine.workflows.messaging import get_message
from handlers.api_messaging import IDEMPOTENCY, idempotent
from handlers.requests import parse, path_id, query, request_id, respond, services, source_address
from handlers.routing import Endpoint
from handlers.schemas import (
    AuthResponse,
    CareTeamCreate,
    CareTeamMemberAdd,
    CareTeamPublic,
    ComplianceGroupCreate,
    ComplianceGroupPublic,
    ComplianceGroupShare,
    ConsentCreate,
    ConsentPublic,
    ConversationCreate,
    ConversationDetailPublic,
    ConversationPublic,
    CreateUserRequest,
    ListQuery,
    LoginRequest,
    MessagePublic,
    OrganizationCreate,
    OrganizationPublic,
    PageOf,
    PatientCreate,
    PatientPublic,
    PatientUpdate,
    RegisterRequest,
    RegistrationAccepted,
    RoleChange,
    SendMessageRequest,
    UserPublic,
)

# --- auth ----------------------------------------------------------------------------------------


def _session(session: identity.Session) -> AuthResponse:
    return AuthResponse(
        token=session.token.token, expires_in=session.token.expires_in, user=UserPublic.of(session.user)
    )


async def register(request: web.Request) -> web.Response:
    body = await parse(request, RegisterRequest)
    cmd = identity.Register(
        body.email, body.password, body.first_name, body.last_name, body.role, body.organization_id
    )
    await identity.register(
        services(request), cmd, request_id=request_id(request), source_address=source_address(request)
    )
    return respond(RegistrationAccepted(detail=identity.REGISTRATION_RECEIVED), 202)


async def login(request: web.Request) -> web.Response:
    body = await parse(request, LoginRequest)
    session = await identity.login(
        services(request),
        body.email,
        body.password,
        request_id=request_id(request),
        source_address=source_address(request),
    )
    return respond(_session(session))


async def profile(request: web.Request, actor: Actor) -> web.Response:
    return respond(UserPublic.of(await identity.profile(services(request), actor)))


async def create_user(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, CreateUserRequest)
    cmd = identity.CreateUser(
        body.email,
        body.password,
        body.first_name,
        body.last_name,
        body.role,
        body.organization_id or actor.organization_id,
    )
    return respond(UserPublic.of(await identity.create_user(services(request), actor, cmd)), 201)


async def logout(request: web.Request, actor: Actor) -> web.Response:
    await accounts.logout(services(request), actor)
    return web.Response(status=204)


async def approve_user(request: web.Request, actor: Actor) -> web.Response:
    return respond(UserPublic.of(await accounts.approve(services(request), actor, path_id(request, "id"))))


async def deactivate_user(request: web.Request, actor: Actor) -> web.Response:
    user = await accounts.deactivate(services(request), actor, path_id(request, "id"))
    return respond(UserPublic.of(user))


async def reactivate_user(request: web.Request, actor: Actor) -> web.Response:
    user = await accounts.reactivate(services(request), actor, path_id(request, "id"))
    return respond(UserPublic.of(user))


async def change_user_role(request: web.Request, actor: Actor) -> web.Response:
    user_id = path_id(request, "id")
    body = await parse(request, RoleChange)
    return respond(UserPublic.of(await accounts.change_role(services(request), actor, user_id, body.role)))


async def revoke_user_sessions(request: web.Request, actor: Actor) -> web.Response:
    user = await accounts.revoke_sessions(services(request), actor, path_id(request, "id"))
    return respond(UserPublic.of(user))


async def unlock_user(request: web.Request, actor: Actor) -> web.Response:
    return respond(UserPublic.of(await accounts.unlock(services(request), actor, path_id(request, "id"))))


async def list_users(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await identity.list_users(services(request), actor, q.cursor, q.limit)
    return respond(
        PageOf[UserPublic](items=[UserPublic.of(u) for u in page.items], next_cursor=page.next_cursor)
    )


# --- organizations & compliance groups ------------------------------------------------------------


async def create_organization(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, OrganizationCreate)
    org = await organizations.create_organization(
        services(request), actor, body.name, self_registration=body.self_registration
    )
    return respond(OrganizationPublic.of(org), 201)


async def list_organizations(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await organizations.list_organizations(services(request), actor, q.cursor, q.limit)
    items = [OrganizationPublic.of(o) for o in page.items]
    return respond(PageOf[OrganizationPublic](items=items, next_cursor=page.next_cursor))


async def create_compliance_group(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ComplianceGroupCreate)
    cmd = organizations.CreateComplianceGroup(body.name, body.description, body.organization_ids)
    group = await organizations.create_compliance_group(services(request), actor, cmd)
    return respond(ComplianceGroupPublic.of(group), 201)


async def share_compliance_group(request: web.Request, actor: Actor) -> web.Response:
    group_id = path_id(request, "id")
    body = await parse(request, ComplianceGroupShare)
    cmd = organizations.ShareComplianceGroup(group_id, body.organization_id)
    return respond(
        ComplianceGroupPublic.of(await organizations.share_compliance_group(services(request), actor, cmd))
    )


async def list_compliance_groups(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await organizations.list_compliance_groups(services(request), actor, q.cursor, q.limit)
    items = [ComplianceGroupPublic.of(g) for g in page.items]
    return respond(PageOf[ComplianceGroupPublic](items=items, next_cursor=page.next_cursor))


# --- consents ------------------------------------------------------------------------------------


async def create_consent(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ConsentCreate)
    ext = body.external_party
    cmd = consents.RecordConsent(
        patient_id=body.patient_id,
        recipient_type=body.recipient_type,
        purpose=body.purpose,
        organization_id=body.organization_id,
        compliance_group_id=body.compliance_group_id,
        external_phone_number=ext.phone_number if ext else None,
        external_name=ext.name if ext else None,
        effective_at=body.effective_at,
        expires_at=body.expires_at,
        scope=frozenset(body.scope),
    )
    svc = services(request)
    consent = await consents.record_consent(svc, actor, cmd)
    return respond(ConsentPublic.of(consent, svc.clock()), 201)


async def list_patient_consents(request: web.Request, actor: Actor) -> web.Response:
    svc = services(request)
    found = await consents.list_consents(svc, actor, path_id(request, "patientId"))
    now = svc.clock()
    return respond(PageOf[ConsentPublic](items=[ConsentPublic.of(c, now) for c in found], next_cursor=None))


# --- patients & care teams ------------------------------------------------------------------------


async def create_patient(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, PatientCreate)
    cmd = patients.RegisterPatient(body.first_name, body.last_name, body.risk_level, body.date_of_birth)
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


# --- conversations -------------------------------------------------------------------------------


async def create_conversation(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ConversationCreate)
    cmd = conversations.StartConversation(
        patient_id=body.patient_id,
        title=body.title,
        member_ids=body.member_ids,
        external_members=[
            conversations.ExternalMember(e.phone_number, e.name, e.organization_id)
            for e in body.external_members
        ],
    )

    async def run(claim: int | None) -> tuple[int, ConversationPublic]:
        created = await conversations.start_conversation(
            services(request), actor, cmd, idempotency_claim=claim
        )
        return 201, ConversationPublic.of(created)

    async def recreate(conversation_id: int) -> tuple[int, ConversationPublic]:
        detail = await conversations.get_conversation(services(request), actor, conversation_id, 0)
        return 201, ConversationPublic.of(detail.conversation)

    return await idempotent(request, actor, "conversation.create", run, recreate)


async def list_conversations(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    page = await conversations.list_conversations(services(request), actor, q.cursor, q.limit)
    items = [ConversationPublic.of(c) for c in page.items]
    return respond(PageOf[ConversationPublic](items=items, next_cursor=page.next_cursor))


async def get_conversation(request: web.Request, actor: Actor) -> web.Response:
    detail = await conversations.get_conversation(services(request), actor, path_id(request, "id"))
    public = ConversationPublic.of(detail.conversation)
    body = ConversationDetailPublic(
        **public.model_dump(), messages=[MessagePublic.of(m) for m in detail.messages]
    )
    return respond(body)


async def send_message(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, SendMessageRequest)

    async def run(claim: int | None) -> tuple[int, MessagePublic]:
        message = await conversations.send_message(
            services(request), actor, body.conversation_id, body.message, idempotency_claim=claim
        )
        return 202, MessagePublic.of(message)

    async def recreate(message_id: int) -> tuple[int, MessagePublic]:
        return 202, MessagePublic.of(await get_message(services(request), actor, message_id))

    return await idempotent(request, actor, "message.send", run, recreate)


_IDEMPOTENCY = (
    "Send an `Idempotency-Key` header to make a retry safe: the same key and body replay the first "
    "response (with `Idempotent-Replayed: true`) instead of doing it twice."
)

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/auth/register",
        register,
        "register",
        "Register a new user (non-privileged roles)",
        "auth",
        RegisterRequest,
        RegistrationAccepted,
        202,
        public=True,
        errors=(400, 403, 422, 429),
        description=(
            "Answers 202 with the same body whether or not the email has an account (the owner of "
            "an existing account is notified instead). Log in afterwards; with `auth.require_approval` "
            "a new account logs in once an admin approves it."
        ),
    ),
    Endpoint(
        "POST",
        "/api/auth/login",
        login,
        "login",
        "Log in and receive an access token",
        "auth",
        LoginRequest,
        AuthResponse,
        public=True,
        errors=(400, 401, 403, 422, 429),
        description=(
            "Failed logins back off exponentially per account and per source address (429 with "
            "`Retry-After`); an account locked after `auth.lockout_failures` failures answers 429 "
            "`account_locked` until an admin unlocks it. An account awaiting approval answers 403."
        ),
    ),
    Endpoint(
        "POST",
        "/api/auth/logout",
        logout,
        "logout",
        "End every session of one's own account (all its access tokens)",
        "auth",
        status=204,
        errors=(401, 403),
    ),
    Endpoint(
        "GET",
        "/api/auth/profile",
        profile,
        "getProfile",
        "The current user's profile",
        "auth",
        response=UserPublic,
        errors=(401, 403),
    ),
    Endpoint(
        "POST",
        "/api/users",
        create_user,
        "createUser",
        "Create an account (admins, own organization)",
        "users",
        CreateUserRequest,
        UserPublic,
        201,
        errors=(400, 401, 403, 409, 422),
    ),
    *[
        Endpoint(
            "POST",
            f"/api/users/{{id}}/{action}",
            handler,
            operation_id,
            summary,
            "users",
            response=UserPublic,
            errors=(401, 403, 404, 409, 422),
        )
        for action, handler, operation_id, summary in [
            ("approve", approve_user, "approveUser", "Approve a self-registered account (admins)"),
            ("deactivate", deactivate_user, "deactivateUser", "Deactivate an account (admins)"),
            ("reactivate", reactivate_user, "reactivateUser", "Reactivate an account (admins)"),
            (
                "sessions/revoke",
                revoke_user_sessions,
                "revokeUserSessions",
                "End every session of an account (admins)",
            ),
            ("unlock", unlock_user, "unlockUser", "Clear an account's failed logins and lockout (admins)"),
        ]
    ],
    Endpoint(
        "PUT",
        "/api/users/{id}/role",
        change_user_role,
        "changeUserRole",
        "Change an account's role (admins)",
        "users",
        RoleChange,
        UserPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Endpoint(
        "GET",
        "/api/users",
        list_users,
        "listUsers",
        "List the accounts of one's organization (admins)",
        "users",
        response=PageOf[UserPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/organizations",
        create_organization,
        "createOrganization",
        "Create an organization",
        "organizations",
        OrganizationCreate,
        OrganizationPublic,
        201,
        errors=(400, 401, 403, 409, 422),
    ),
    Endpoint(
        "GET",
        "/api/organizations",
        list_organizations,
        "listOrganizations",
        "List organizations",
        "organizations",
        response=PageOf[OrganizationPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/compliance-groups",
        create_compliance_group,
        "createComplianceGroup",
        "Create a compliance group",
        "compliance",
        ComplianceGroupCreate,
        ComplianceGroupPublic,
        201,
        errors=(400, 401, 403, 409, 422),
    ),
    Endpoint(
        "GET",
        "/api/compliance-groups",
        list_compliance_groups,
        "listComplianceGroups",
        "List compliance groups",
        "compliance",
        response=PageOf[ComplianceGroupPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/compliance-groups/{id}/shares",
        share_compliance_group,
        "shareComplianceGroup",
        "Share a compliance group of one's organization with another organization, by name",
        "compliance",
        ComplianceGroupShare,
        ComplianceGroupPublic,
        description="Its compliance officers may then name the group in their own patients' consents.",
    ),
    Endpoint(
        "POST",
        "/api/consents",
        create_consent,
        "createConsent",
        "Record a patient's consent",
        "consents",
        ConsentCreate,
        ConsentPublic,
        201,
    ),
    Endpoint(
        "GET",
        "/api/patients/{patientId}/consents",
        list_patient_consents,
        "listPatientConsents",
        "A patient's consents",
        "consents",
        response=PageOf[ConsentPublic],
    ),
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
    Endpoint(
        "POST",
        "/api/conversations",
        create_conversation,
        "createConversation",
        "Start a conversation about a patient",
        "conversations",
        ConversationCreate,
        ConversationPublic,
        201,
        errors=(400, 401, 403, 404, 409, 422),
        description=_IDEMPOTENCY,
        contracts=(IDEMPOTENCY,),
    ),
    Endpoint(
        "GET",
        "/api/conversations",
        list_conversations,
        "listConversations",
        "One's conversations",
        "conversations",
        response=PageOf[ConversationPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/conversations/send-message",
        send_message,
        "sendMessage",
        "Send a message (accepted for delivery)",
        "conversations",
        SendMessageRequest,
        MessagePublic,
        202,
        errors=(400, 401, 403, 404, 409, 422),
        description=_IDEMPOTENCY,
        contracts=(IDEMPOTENCY,),
    ),
    Endpoint(
        "GET",
        "/api/conversations/{id}",
        get_conversation,
        "getConversation",
        "A conversation and its recent messages",
        "conversations",
        response=ConversationDetailPublic,
    ),
]
