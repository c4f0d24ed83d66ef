"""Schemas of accounts and organizations: registration, login, users, roles; organizations and
compliance groups and their shares."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    Field,
    StringConstraints,
    WithJsonSchema,
)

from engine.model import (
    SELF_REGISTRABLE_ROLES,
    ComplianceGroup,
    Organization,
    Role,
    User,
)
from handlers.schemas import (
    Email,
    Id,
    Name,
    Password,
    Request,
    Response,
    Title,
)

# --- auth & users --------------------------------------------------------------------------------


#: The JSON schema of the roles registration accepts; the others are refused (422) by the workflow.
_SELF_REGISTRABLE = WithJsonSchema(
    {
        "type": "string",
        "enum": sorted(r.value for r in SELF_REGISTRABLE_ROLES),
        "description": "Only non-privileged roles may register themselves; others are given by an admin.",
    }
)


class RegisterRequest(Request):
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    role: Annotated[Role, _SELF_REGISTRABLE] = Role.PEER_SUPPORT
    organization_id: Id | None = None


class LoginRequest(Request):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class CreateUserRequest(Request):
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    role: Role
    organization_id: Id | None = None


class UserPublic(Response):
    id: int
    email: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int
    is_active: bool
    pending_approval: bool = Field(description="Self-registered and not yet approved by an admin.")
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            role=user.role,
            organization_id=user.organization_id,
            is_active=user.is_active,
            pending_approval=user.pending_approval,
            created_at=user.created_at,
        )


class RegistrationAccepted(Response):
    """The same answer whether or not the email has an account already."""

    status: Literal["accepted"] = "accepted"
    detail: str


class RoleChange(Request):
    role: Role


class AuthResponse(Response):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int = Field(description="Seconds until the token expires.")
    user: UserPublic


# --- organizations & compliance groups ------------------------------------------------------------


class OrganizationCreate(Request):
    name: Title
    self_registration: bool = False


class OrganizationPublic(Response):
    id: int
    name: str
    self_registration: bool
    created_at: datetime

    @classmethod
    def of(cls, org: Organization) -> OrganizationPublic:
        return cls(
            id=org.id, name=org.name, self_registration=org.self_registration, created_at=org.created_at
        )


class ComplianceGroupCreate(Request):
    name: Title
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    organization_ids: Annotated[list[Id], Field(min_length=1, max_length=200)]


class ComplianceGroupShare(Request):
    organization_id: Id


class ComplianceGroupPublic(Response):
    id: int
    name: str
    description: str | None
    organization_id: int  # the owner: the organization whose compliance officer created it
    organization_ids: list[int]
    created_at: datetime
    # Organizations the owner shared the group with (their consents may name it).
    shared_with: list[int]

    @classmethod
    def of(cls, group: ComplianceGroup) -> ComplianceGroupPublic:
        return cls(
            id=group.id,
            name=group.name,
            description=group.description,
            organization_id=group.organization_id,
            organization_ids=list(group.member_organization_ids),
            created_at=group.created_at,
            shared_with=list(group.shared_with),
        )
