"""Account administration: an admin approves, deactivates, reactivates, re-roles, ends the
sessions of, and unlocks an account of their own organization; anyone logs themself out.

Each action is a policy-decided workflow (``user.approve``, ``user.deactivate``, ``user.reactivate``,
``user.change_role``, ``user.revoke_sessions``, ``user.unlock``, ``auth.logout``) and is audited
with its effects. An account of another organization answers like one that does not exist.

Sessions end through ``users.sessions_valid_after``: a token issued before it is refused by the
account check (:class:`engine.ports.AccountDirectory`): at once by the instance that ended them
(``Services.on_sessions_ended``), within ``auth.account_recheck_seconds`` by every other.
"""

from __future__ import annotations

from engine.audit import AuditEvent, DetailValue
from engine.decisions import Fact
from engine.effects import RemoveMembers
from engine.errors import Conflict, NotFound
from engine.model import Actor, Role, User
from engine.ports.units import AccountsUnitOfWork
from engine.services import Guard, Services
from engine.workflows.identity import account_throttle_key

#: Conversations read per page while a deactivated member leaves their channels.
_PAGE = 200


def _unit_of_work(services: Services) -> AccountsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


async def _target(
    guard: Guard[AccountsUnitOfWork], workflow: str, user_id: int, **details: DetailValue
) -> User:
    """The account the admin acts on, decided with ``own_org``; 404 if absent or of another org."""

    async def facts_of() -> frozenset[str] | None:
        # For the record of a refused role only (`policy diff` replays it): the answer is the same.
        found = await guard.uow.users.get(user_id)
        if found is None:
            return None
        return (
            frozenset({Fact.OWN_ORG}) if found.organization_id == guard.actor.organization_id else frozenset()
        )

    await guard.require_role_recording_facts(workflow, facts_of, resource_type="user", resource_id=user_id)
    user = await guard.uow.users.get(user_id)
    if user is None or user.organization_id != guard.actor.organization_id:
        guard.record_missing(workflow, "user", user_id)
        raise NotFound("user")
    guard.require(workflow, {Fact.OWN_ORG}, resource_type="user", resource_id=user_id, details=details)
    return user


def _not_self(guard: Guard[AccountsUnitOfWork], user: User) -> None:
    if user.id == guard.actor.user_id:
        # An organization must never be left without the admin who could undo this.
        raise Conflict("An administrator cannot deactivate or re-role their own account.")


def _effect(
    guard: Guard[AccountsUnitOfWork],
    workflow: str,
    event: str,
    resource_type: str,
    resource_id: int,
    **details: DetailValue,
) -> None:
    guard.uow.audit.record(
        AuditEvent.by(
            guard.actor,
            event=event,
            workflow=workflow,
            outcome="success",
            occurred_at=guard.now,
            resource_type=resource_type,
            resource_id=str(resource_id),
            policy_version=guard.policy.version,
            details=details,
        )
    )


async def approve(services: Services, actor: Actor, user_id: int) -> User:
    """Let a self-registered account log in (``auth.require_approval``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        user = await _target(guard, "user.approve", user_id)
        if user.pending_approval:
            user = await uow.users.update_account(user_id, pending_approval=False)
        await uow.commit()
    return user


async def deactivate(services: Services, actor: Actor, user_id: int) -> User:
    """The account can no longer log in, its tokens stop working, and it leaves the chat channels
    of its conversations (one member-removal effect per conversation, through the outbox)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        user = await _target(guard, "user.deactivate", user_id)
        _not_self(guard, user)
        user = await uow.users.update_account(user_id, is_active=False, sessions_valid_after=guard.now)
        after: int | None = None
        while True:
            page = await uow.conversations.list_for_member(user_id, after, _PAGE)
            for conversation in page.items:
                await uow.outbox.enqueue(RemoveMembers(conversation.id, (user.chat_user_id,)))
                _effect(
                    guard,
                    "user.deactivate",
                    "conversation.member_left_channel",
                    "conversation",
                    conversation.id,
                    subject_user_id=user_id,
                )
            if page.next_cursor is None:
                break
            after = page.next_cursor
        await uow.commit()
    services.on_sessions_ended(user_id)
    services.delivery.wake()
    return user


async def reactivate(services: Services, actor: Actor, user_id: int) -> User:
    """The account may log in again; tokens from before its deactivation stay refused."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await _target(guard, "user.reactivate", user_id)
        user = await uow.users.update_account(user_id, is_active=True)
        await uow.commit()
    return user


async def change_role(services: Services, actor: Actor, user_id: int, role: Role) -> User:
    """Give the account another role; its tokens (which name the old role) stop working."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        user = await _target(guard, "user.change_role", user_id, role=role.value)
        _not_self(guard, user)
        guard.annotate(previous_role=user.role.value)
        user = await uow.users.update_account(user_id, role=role, sessions_valid_after=guard.now)
        await uow.commit()
    services.on_sessions_ended(user_id)
    return user


async def revoke_sessions(services: Services, actor: Actor, user_id: int) -> User:
    """End every session of the account: its tokens issued until now stop working."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await _target(guard, "user.revoke_sessions", user_id)
        user = await uow.users.update_account(user_id, sessions_valid_after=guard.now)
        await uow.commit()
    services.on_sessions_ended(user_id)
    return user


async def unlock(services: Services, actor: Actor, user_id: int) -> User:
    """Clear the account's failed logins, lockout included (the source address's are kept)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        user = await _target(guard, "user.unlock", user_id)
        cleared = await uow.login_throttle.clear(account_throttle_key(services, user.email))
        guard.annotate(was_throttled=cleared)
        await uow.commit()
    return user


async def logout(services: Services, actor: Actor) -> None:
    """End every session of one's own account (this token included)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("auth.logout", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        await uow.users.update_account(actor.user_id, sessions_valid_after=guard.now)
        await uow.commit()
    services.on_sessions_ended(actor.user_id)
