"""Registration, login, profiles and account administration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent
from engine.decisions import Decision, Fact
from engine.errors import FieldError, Forbidden, InvalidInput, NotFound, Unauthenticated
from engine.model import SELF_REGISTRABLE_ROLES, Actor, Page, Role, User
from engine.ports import IssuedToken, NewUser, PasswordHasher, UnitOfWorkFactory
from engine.services import Guard, Services, utc_now

# A valid argon2 hash of a random password: verifying against it when the email is unknown makes
# login take the same time whether or not the account exists.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$g6SoXOwRN10X/g+7U/c7dQ$woOOJvZByuCTn0LT5k0eKez4MR2fLKP8cal4WDWpebo"
)


@dataclass(frozen=True)
class Register:
    email: str
    password: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int | None = None


@dataclass(frozen=True)
class CreateUser:
    email: str
    password: str
    first_name: str
    last_name: str
    role: Role
    organization_id: int


@dataclass(frozen=True)
class Session:
    user: User
    token: IssuedToken


def _auth_event(
    services: Services,
    event: str,
    outcome: str,
    *,
    user: User | None,
    reason: str,
    request_id: str,
    source_address: str | None,
    email: str | None = None,
) -> AuditEvent:
    # The email is searchable in the audit trail only as a keyed hash, never in clear.
    subject_hash = services.identifiers.email(email) if email and services.identifiers else None
    return AuditEvent(
        event=event,
        workflow=event,
        outcome="success" if outcome == "success" else "denied",
        occurred_at=services.clock(),
        actor_id=user.id if user else None,
        actor_role=user.role.value if user else None,
        organization_id=user.organization_id if user else None,
        request_id=request_id,
        source_address=source_address,
        resource_type="user",
        resource_id=str(user.id) if user else None,
        reason=reason,
        subject_hash=subject_hash,
    )


async def register(
    services: Services, cmd: Register, *, request_id: str, source_address: str | None
) -> Session:
    """Self-registration: only non-privileged roles, only into an organization that allows it."""
    if cmd.role not in SELF_REGISTRABLE_ROLES:
        raise InvalidInput(
            [
                FieldError(
                    "role",
                    "Only peer_support and care_team_member may register themselves.",
                    "forbidden_value",
                )
            ]
        )
    if not services.settings.self_registration:
        decision = Decision(
            False,
            "auth.register",
            cmd.role.value,
            "self_registration_disabled",
            hint="Ask an administrator to create your account.",
        )
        async with services.uow() as uow:  # the refusal is a decision: on record like any other
            uow.audit.record(
                _auth_event(
                    services,
                    "auth.register",
                    "denied",
                    user=None,
                    reason=decision.reason,
                    request_id=request_id,
                    source_address=source_address,
                    email=cmd.email,
                )
            )
            await uow.commit()
        raise Forbidden(decision)
    password_hash = await services.passwords.hash(cmd.password)
    async with services.uow() as uow:
        if cmd.organization_id is None:
            organization = await uow.organizations.by_name(services.settings.default_organization)
        else:
            organization = await uow.organizations.get(cmd.organization_id)
        if organization is None or not organization.self_registration:
            # The same answer whether the organization is missing or closed: ids are not an oracle.
            raise InvalidInput(
                [FieldError("organizationId", "This organization does not accept self-registration.")]
            )
        user = await uow.users.add(
            NewUser(
                cmd.email.lower(), password_hash, cmd.first_name, cmd.last_name, cmd.role, organization.id
            )
        )
        uow.audit.record(
            _auth_event(
                services,
                "auth.register",
                "success",
                user=user,
                reason="registered",
                request_id=request_id,
                source_address=source_address,
                email=cmd.email,
            )
        )
        await uow.commit()
    return Session(user, services.tokens.issue(user))


async def login(
    services: Services, email: str, password: str, *, request_id: str, source_address: str | None
) -> Session:
    """Check a password; every attempt, good or bad, is audited without the email in clear."""
    async with services.uow() as uow:
        credentials = await uow.users.credentials(email.lower())
        ok = await services.passwords.verify(
            credentials.password_hash if credentials else _DUMMY_HASH, password
        )
        user = credentials.user if credentials else None
        if not ok or user is None or not user.is_active:
            reason = "unknown_email" if user is None else ("inactive" if ok else "bad_password")
            uow.audit.record(
                _auth_event(
                    services,
                    "auth.login",
                    "denied",
                    user=user,
                    reason=reason,
                    request_id=request_id,
                    source_address=source_address,
                    email=email,
                )
            )
            await uow.commit()
            raise Unauthenticated("Email or password is wrong.")
        uow.audit.record(
            _auth_event(
                services,
                "auth.login",
                "success",
                user=user,
                reason="authenticated",
                request_id=request_id,
                source_address=source_address,
                email=email,
            )
        )
        await uow.commit()
    return Session(user, services.tokens.issue(user))


async def profile(services: Services, actor: Actor) -> User:
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        guard.require("auth.profile", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        user = await uow.users.get(actor.user_id)
        if user is None:
            raise NotFound("user")
        await uow.commit()
    return user


async def create_user(services: Services, actor: Actor, cmd: CreateUser) -> User:
    """An admin creates an account of any role, in their own organization only."""
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        facts = {Fact.OWN_ORG} if cmd.organization_id == actor.organization_id else set()
        guard.require(
            "user.create",
            facts,
            resource_type="organization",
            resource_id=cmd.organization_id,
            field="organizationId",
            details={"role": cmd.role.value},
        )
        # Hashed only once allowed: an argon2 hash costs ~0.1 s of CPU and 64 MiB.
        password_hash = await services.passwords.hash(cmd.password)
        user = await uow.users.add(
            NewUser(
                cmd.email.lower(), password_hash, cmd.first_name, cmd.last_name, cmd.role, cmd.organization_id
            )
        )
        guard.annotate(user_id=user.id)
        await uow.commit()
    return user


async def list_users(services: Services, actor: Actor, after: int | None, limit: int | None) -> Page[User]:
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "user.list", {Fact.OWN_ORG}, resource_type="organization", resource_id=actor.organization_id
        )
        page = await uow.users.list_for_organization(actor.organization_id, after, services.page_size(limit))
        await uow.commit()
    return page


async def bootstrap_user(
    uow_factory: UnitOfWorkFactory,
    passwords: PasswordHasher,
    cmd: CreateUser,
    clock: Callable[[], datetime] = utc_now,
) -> User:
    """The command line's ``create-user``: the way to create the first admin. Audited as a system action."""
    password_hash = await passwords.hash(cmd.password)
    async with uow_factory() as uow:
        if await uow.organizations.get(cmd.organization_id) is None:
            raise NotFound("organization")
        user = await uow.users.add(
            NewUser(
                cmd.email.lower(), password_hash, cmd.first_name, cmd.last_name, cmd.role, cmd.organization_id
            )
        )
        uow.audit.record(
            AuditEvent(
                event="admin.create_user",
                workflow="user.create",
                outcome="success",
                occurred_at=clock(),
                organization_id=cmd.organization_id,
                resource_type="user",
                resource_id=str(user.id),
                reason="command_line",
                details={"role": cmd.role.value},
            )
        )
        await uow.commit()
    return user
