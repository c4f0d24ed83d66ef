"""Accounts and organizations over HTTP: registration, login and logout, the profile, users and
their roles and sessions (admins), organizations and compliance groups and their shares."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import accounts, identity, organizations
from handlers.requests import parse, path_id, query, request_id, respond, services, source_address
from handlers.routing import Endpoint
from handlers.schemas import ListQuery, PageOf
from handlers.schemas.identity import (
    AuthResponse,
    ComplianceGroupCreate,
    ComplianceGroupPublic,
    ComplianceGroupShare,
    CreateUserRequest,
    LoginRequest,
    OrganizationCreate,
    OrganizationPublic,
    RegisterRequest,
    RegistrationAccepted,
    RoleChange,
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
]
