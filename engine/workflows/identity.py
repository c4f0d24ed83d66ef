"""Registration, login (with its throttle), profiles and account creation.

Longer than 400 lines because registration and login share the throttle, the timing-equalising hash
and the email and password rules.

Administering existing accounts (approve, deactivate, change role, end sessions, unlock) is in
:mod:`engine.workflows.accounts`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent, DetailValue
from engine.decisions import Decision, Fact
from engine.errors import (
    AccountLocked,
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from engine.login_throttle import ACCOUNT_PREFIX, ADDRESS_PREFIX, NOTICE_PREFIX, REGISTRATION_PREFIX, Backoff
from engine.model import SELF_REGISTRABLE_ROLES, Actor, Page, Role, User
from engine.ports.identity import IssuedToken, NewUser, PasswordHasher
from engine.ports.units import IdentityUnitOfWork
from engine.services import Guard, Services, utc_now, would_allow
from engine.sources import counted_source


def _unit_of_work(services: Services) -> IdentityUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


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
    details: dict[str, DetailValue] | None = None,
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
        details=details or {},
    )


_PASSWORD_PROBLEMS = {
    "common": "This password is on a list of common or breached passwords; choose another.",
    "guessable": "This password is too easy to guess; use a longer passphrase of unrelated words.",
}


async def check_password(services: Services, password: str, user_inputs: Sequence[str] = ()) -> None:
    """Refuse a password that is too short (``password_min_length``, at least 8: ASVS 5.0 V6.2.1)
    or, when a strength check is configured, common, breached or guessable (V6.2.4): 422 naming
    ``password``. Nothing of the password is echoed or logged."""
    minimum = services.settings.password_min_length
    if len(password) < minimum:
        raise InvalidInput(
            [FieldError("password", f"Must be at least {minimum} characters long.", "password_too_short")]
        )
    if services.password_strength is not None:
        weakness = await services.password_strength.weakness(password, user_inputs)
        if weakness is not None:
            message = _PASSWORD_PROBLEMS.get(weakness, _PASSWORD_PROBLEMS["guessable"])
            raise InvalidInput([FieldError("password", message, f"password_{weakness}")])


#: What registration answers, whether or not the email has an account already.
REGISTRATION_RECEIVED = (
    "If this email address can be registered, the account exists now: log in with it (a new "
    "account may first need an administrator's approval). The address's owner is told either way."
)


async def register(services: Services, cmd: Register, *, request_id: str, source_address: str | None) -> None:
    """Self-registration: only non-privileged roles, only into an organization that allows it.

    The answer is the same whether or not the email has an account (no enumeration, ASVS 5.0
    V6.3.8): a new account is created (pending approval while ``require_approval`` holds); for a
    taken address nothing changes and the owner is told through the notifier. The client logs in
    afterwards."""
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
        async with _unit_of_work(services) as uow:  # the refusal is a decision: on record like any other
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
    now = services.clock()
    source_key = REGISTRATION_PREFIX + counted_source(source_address) if source_address else None
    if source_key is not None:
        # Paced and counted before the costly part (the password's checks and its hash), whatever
        # comes of the attempt: one refused for its organization or its password costs as much.
        async with _unit_of_work(services) as uow:
            wait = await _counted(uow, source_key, now, services.settings.registration_backoff)
            if wait is not None:
                raise TooManyRequests(
                    "Too many registrations from this address; try again later.", retry_after=wait
                )
            await uow.commit()
    await check_password(services, cmd.password, (cmd.email, cmd.first_name, cmd.last_name))
    # Hashed whether or not the email is taken: both answers take the same time.
    password_hash = await services.passwords.hash(cmd.password)
    email = cmd.email.lower()
    pending = services.settings.require_approval
    notify = True
    async with _unit_of_work(services) as uow:
        if cmd.organization_id is None:
            organization = await uow.organizations.by_name(services.settings.default_organization)
        else:
            organization = await uow.organizations.get(cmd.organization_id)
        if organization is None or not organization.self_registration:
            # The same answer whether the organization is missing or closed: ids are not an oracle.
            raise InvalidInput(
                [FieldError("organizationId", "This organization does not accept self-registration.")]
            )
        existing = await uow.users.credentials(email)
        user: User | None = None
        if existing is None:
            try:
                user = await uow.users.add(
                    NewUser(
                        email,
                        password_hash,
                        cmd.first_name,
                        cmd.last_name,
                        cmd.role,
                        organization.id,
                        pending_approval=pending,
                    )
                )
            except Conflict:  # registered by a concurrent request a moment ago
                existing = await uow.users.credentials(email)
        if user is not None:
            event = _auth_event(
                services,
                "auth.register",
                "success",
                user=user,
                reason="registered_pending_approval" if pending else "registered",
                request_id=request_id,
                source_address=source_address,
                email=email,
            )
        else:
            # Someone tried an address that has an account: on record for the account's
            # organization (whose auditors can see it), and its owner is told. No actor: nobody
            # authenticated.
            taken = existing.user if existing else None
            event = AuditEvent(
                event="auth.register",
                workflow="auth.register",
                outcome="denied",
                occurred_at=services.clock(),
                organization_id=taken.organization_id if taken else None,
                request_id=request_id,
                source_address=source_address,
                resource_type="user",
                resource_id=str(taken.id) if taken else None,
                reason="email_taken",
                subject_hash=services.identifiers.email(email) if services.identifiers else None,
            )
            if existing is not None:  # its owner is told once per window, however often it is tried
                notice_key = NOTICE_PREFIX + _email_key(services, email)
                notify = await _counted(uow, notice_key, now, services.settings.notice_backoff) is None
        uow.audit.record(event)
        await uow.commit()
    if services.notifier is not None and notify:
        if user is not None:
            await services.notifier.registration_received(user)
        elif existing is not None:
            await services.notifier.registration_attempted(existing.user)


async def _counted(uow: IdentityUnitOfWork, key: str, now: datetime, backoff: Backoff) -> float | None:
    """Count one more under ``key`` (paced by ``backoff``), unless it is still waiting: then the
    seconds left, and nothing counted."""
    state = (await uow.login_throttle.states([key])).get(key)
    wait = state.retry_after(now) if state is not None else None
    if wait is None:
        await uow.login_throttle.record_failure(key, now, backoff)
    return wait


def account_throttle_key(services: Services, email: str) -> str:
    """The throttle key of the account an email names, whether or not that account exists."""
    return ACCOUNT_PREFIX + _email_key(services, email)


def _email_key(services: Services, email: str) -> str:
    normalized = email.strip().lower()
    if services.identifiers is not None:
        return services.identifiers.email(normalized)
    return hashlib.sha256(normalized.encode()).hexdigest()


async def login(
    services: Services, email: str, password: str, *, request_id: str, source_address: str | None
) -> Session:
    """Check a password; every attempt, good or bad, is audited without the email in clear.

    Failures are counted per account (by the email tried, known or not) and per source address
    (:mod:`engine.login_throttle`); while either is backing off, attempts are refused with 429 and
    ``retry_after`` before any password is checked, and an account that reached the lockout count
    stays locked until an admin unlocks it. A refused attempt is logged, not audited: the failure
    that started the back-off or lock is on the audit record, with what it earned.
    """
    rules = services.settings
    now = services.clock()
    account_key = account_throttle_key(services, email)
    address_key = ADDRESS_PREFIX + counted_source(source_address) if source_address else None
    keys = [account_key] if address_key is None else [account_key, address_key]
    async with _unit_of_work(services) as uow:
        throttled = await uow.login_throttle.states(keys)
        account_state = throttled.get(account_key)
        if account_state is not None and account_state.locked:
            raise AccountLocked(
                "Too many failed logins: an administrator of the organization must unlock this account."
            )
        waits = [w for st in throttled.values() if (w := st.retry_after(now)) is not None]
        if waits:
            raise TooManyRequests("Too many failed logins; try again later.", retry_after=max(waits))
        credentials = await uow.users.credentials(email.lower())
    # Verified with no transaction open: a hash takes ~0.1 s of CPU and may wait its turn
    # (integrations/security.py), and a connection held meanwhile would let a storm of logins drain
    # the pool that every other request needs. An unknown email costs the same verification as a
    # known one (the hasher's own dummy hash): login takes as long whether or not the account exists.
    ok = await services.passwords.verify(credentials.password_hash if credentials else None, password)
    user = credentials.user if credentials else None
    async with _unit_of_work(services) as uow:
        if not ok or user is None or not user.is_active:
            reason = "unknown_email" if user is None else ("inactive" if ok else "bad_password")
            details: dict[str, DetailValue] = {}
            account = await uow.login_throttle.record_failure(account_key, now, rules.account_backoff)
            if account.locked:
                details["account_locked"] = True
            elif (wait := account.retry_after(now)) is not None:
                details["account_backoff_seconds"] = math.ceil(wait)
            if address_key is not None:
                address = await uow.login_throttle.record_failure(address_key, now, rules.address_backoff)
                if (wait := address.retry_after(now)) is not None:
                    details["address_backoff_seconds"] = math.ceil(wait)
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
                    details=details,
                )
            )
            await uow.commit()
            raise Unauthenticated("Email or password is wrong.")
        if user.pending_approval:
            decision = Decision(
                False,
                "auth.login",
                user.role.value,
                "pending_approval",
                hint="An administrator of your organization must approve this account first.",
            )
            uow.audit.record(
                _auth_event(
                    services,
                    "auth.login",
                    "denied",
                    user=user,
                    reason=decision.reason,
                    request_id=request_id,
                    source_address=source_address,
                    email=email,
                )
            )
            await uow.commit()
            raise Forbidden(decision, "This account awaits an administrator's approval.")
        if account_state is not None:
            await uow.login_throttle.clear(account_key)
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
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("auth.profile", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        user = await uow.users.get(actor.user_id)
        if user is None:
            raise NotFound("user")
        await uow.commit()
    return user


async def create_user(services: Services, actor: Actor, cmd: CreateUser) -> User:
    """An admin creates an account of any role, in their own organization only.

    The password is checked and hashed only when the policy would allow (an argon2 hash costs ~0.1 s
    of CPU and 64 MiB) and before the unit of work opens: a hash may wait its turn behind a storm of
    logins (``auth.argon2_concurrency``), and an open unit of work holds one of the database pool's
    places all the while (an admin's script creating a clinic's accounts in parallel would hold them
    all). A password refused (or a check or hash that failed) is raised inside the unit of work,
    after the allowed decision, so the decision is on record with the 422 (or the failure) as before."""
    facts = {Fact.OWN_ORG} if cmd.organization_id == actor.organization_id else set()
    prepared: str | Exception | None = None
    if would_allow(services, actor, "user.create", facts):
        try:
            await check_password(services, cmd.password, (cmd.email, cmd.first_name, cmd.last_name))
            prepared = await services.passwords.hash(cmd.password)
        except Exception as failed:  # raised again once the decision is on record
            prepared = failed
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "user.create",
            facts,
            resource_type="organization",
            resource_id=cmd.organization_id,
            field="organizationId",
            details={"role": cmd.role.value},
        )
        if isinstance(prepared, Exception):
            raise prepared
        if prepared is None:  # the policy was reloaded to allow it a moment ago: rare, so hashed here
            await check_password(services, cmd.password, (cmd.email, cmd.first_name, cmd.last_name))
            prepared = await services.passwords.hash(cmd.password)
        user = await uow.users.add(
            NewUser(cmd.email.lower(), prepared, cmd.first_name, cmd.last_name, cmd.role, cmd.organization_id)
        )
        guard.annotate(user_id=user.id)
        await uow.commit()
    return user


async def list_users(services: Services, actor: Actor, after: int | None, limit: int | None) -> Page[User]:
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "user.list", {Fact.OWN_ORG}, resource_type="organization", resource_id=actor.organization_id
        )
        page = await uow.users.list_for_organization(actor.organization_id, after, services.page_size(limit))
        await uow.commit()
    return page


async def bootstrap_user(
    uow_factory: Callable[[], IdentityUnitOfWork],
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
