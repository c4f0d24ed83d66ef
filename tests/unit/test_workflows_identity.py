"""Identity workflows (register, login, profile) on fakes: the real policy decides; storage, hashing
and tokens are in memory. Each test runs in milliseconds; tests/api/test_auth.py covers the same
workflows over HTTP and PostgreSQL. An admin's accounts are in test_workflows_users.py."""

from __future__ import annotations

import contextlib

import pytest

from engine.errors import AccountLocked, Forbidden, InvalidInput, TooManyRequests, Unauthenticated
from engine.login_throttle import ACCOUNT_BACKOFF
from engine.model import Role
from engine.services import EngineSettings
from engine.workflows.identity import (
    Register,
    login,
    profile,
    register,
)
from tests.support.fakes import FakeWorld, counting_open_transactions, fake_services

PASSWORD = "correct horse battery"


def _register(organization_id: int | None, role: Role = Role.CARE_TEAM_MEMBER, email: str = "") -> Register:
    return Register(email or "New.Nurse@Example.org", PASSWORD, "New", "Nurse", role, organization_id)


async def test_a_nurse_registers_into_an_open_organization_and_logs_in_for_a_token(world: FakeWorld) -> None:
    org = world.organization(self_registration=True)

    answer = await register(world.services, _register(org.id), request_id="r1", source_address="10.0.0.1")

    assert answer is None  # registration answers "accepted" alone: no token, no account details
    [user] = world.db.users.values()
    assert (user.email, user.organization_id, user.role) == (
        "new.nurse@example.org",  # stored lower-case
        org.id,
        Role.CARE_TEAM_MEMBER,
    )
    assert not user.pending_approval  # require_approval is off by default
    assert world.db.password_hashes[user.id] == f"fake-hash:{PASSWORD}"
    assert world.notifier.told == [("registration_received", user.id)]
    [event] = world.events("auth.register")
    assert (event.outcome, event.reason, event.actor_id) == ("success", "registered", user.id)
    assert event.request_id == "r1"
    assert event.subject_hash is None  # no identifier key configured: no hash, and never the email

    session = await login(
        world.services, "new.nurse@example.org", PASSWORD, request_id="r2", source_address=None
    )

    assert session.user == user
    assert world.tokens.verify(session.token.token).user_id == user.id


async def test_with_approval_required_a_registered_account_cannot_log_in_yet() -> None:
    world = fake_services(EngineSettings(require_approval=True))
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)

    with pytest.raises(Forbidden) as raised:
        await login(world.services, "new.nurse@example.org", PASSWORD, request_id="r2", source_address=None)

    assert raised.value.decision.reason == "pending_approval"
    [registered] = world.events("auth.register")
    assert registered.reason == "registered_pending_approval"
    [event] = world.events("auth.login")
    assert (event.outcome, event.reason) == ("denied", "pending_approval")
    assert world.tokens.issued == {}


async def test_registration_without_an_organization_joins_the_default_one(world: FakeWorld) -> None:
    default = world.organization(EngineSettings().default_organization)
    world.organization("Another open one")

    await register(world.services, _register(None), request_id="r", source_address=None)

    [user] = world.db.users.values()
    assert user.organization_id == default.id


async def test_a_privileged_role_cannot_be_self_registered_and_nothing_is_stored(world: FakeWorld) -> None:
    org = world.organization()

    with pytest.raises(InvalidInput) as raised:
        await register(world.services, _register(org.id, Role.ADMIN), request_id="r", source_address=None)

    assert [e.field for e in raised.value.errors] == ["role"]
    assert world.db.users == {}


@pytest.mark.parametrize("reason", ["closed", "missing"])
async def test_registration_into_a_closed_or_missing_organization_names_the_field(
    world: FakeWorld, reason: str
) -> None:
    org_id = world.organization(self_registration=False).id if reason == "closed" else 999_999

    with pytest.raises(InvalidInput) as raised:
        await register(world.services, _register(org_id), request_id="r", source_address=None)

    assert [e.field for e in raised.value.errors] == ["organizationId"]
    assert world.db.users == {}


async def test_with_self_registration_off_the_refusal_is_a_decision_on_record() -> None:
    world = fake_services(EngineSettings(self_registration=False))
    org = world.organization()

    with pytest.raises(Forbidden) as raised:
        await register(world.services, _register(org.id), request_id="r9", source_address=None)

    assert raised.value.decision.reason == "self_registration_disabled"
    [event] = world.events("auth.register")
    assert (event.outcome, event.reason, event.request_id) == ("denied", "self_registration_disabled", "r9")
    assert world.db.users == {}


async def test_registering_a_taken_email_answers_the_same_and_tells_its_owner(world: FakeWorld) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    [owner] = world.db.users.values()
    other_org = world.organization()

    again = await register(
        world.services,
        _register(other_org.id, Role.PEER_SUPPORT, "NEW.nurse@example.org"),
        request_id="r2",
        source_address="10.0.0.2",
    )

    assert again is None  # the same answer as a new account: registration is no email oracle
    assert list(world.db.users.values()) == [owner]  # nothing changed
    assert world.db.password_hashes[owner.id] == f"fake-hash:{PASSWORD}"
    assert world.notifier.told == [("registration_received", owner.id), ("registration_attempted", owner.id)]
    _, attempt = world.events("auth.register")
    assert (attempt.outcome, attempt.reason, attempt.actor_id) == ("denied", "email_taken", None)
    # On record for the account's organization, whose auditors may see it; nobody authenticated.
    assert (attempt.organization_id, attempt.resource_id) == (org.id, str(owner.id))
    assert "new.nurse@example.org" not in repr(attempt).lower()


async def test_login_with_the_right_password_is_audited_as_a_success(world: FakeWorld) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    [registered] = world.db.users.values()

    session = await login(
        world.services, "NEW.NURSE@example.org", PASSWORD, request_id="r2", source_address="10.0.0.3"
    )

    assert session.user == registered
    assert world.tokens.verify(session.token.token).user_id == registered.id
    [event] = world.events("auth.login")
    assert (event.outcome, event.reason, event.actor_id) == ("success", "authenticated", registered.id)
    assert (event.request_id, event.source_address, event.details) == ("r2", "10.0.0.3", {})
    assert world.db.login_throttles == {}  # a success with no failures before it counts nothing


@pytest.mark.parametrize("password", [PASSWORD, "wrong"], ids=["right", "wrong"])
async def test_a_password_is_verified_with_no_transaction_open(world: FakeWorld, password: str) -> None:
    """A hash takes ~0.1 s and may wait its turn: a connection held meanwhile would let a storm of
    logins drain the pool every other request needs."""
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    services, verified_with = counting_open_transactions(world)
    with contextlib.suppress(Unauthenticated):
        await login(services, "new.nurse@example.org", password, request_id="r2", source_address="10.0.0.3")

    assert verified_with == [0]
    assert [e.outcome for e in world.events("auth.login")] == [
        "success" if password == PASSWORD else "denied"
    ]


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        ("new.nurse@example.org", "wrong", "bad_password"),
        ("nobody@example.org", PASSWORD, "unknown_email"),
    ],
    ids=["bad-password", "unknown-email"],
)
async def test_a_failed_login_is_one_answer_for_every_cause_and_the_cause_is_on_record(
    world: FakeWorld, email: str, password: str, reason: str
) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)

    with pytest.raises(Unauthenticated) as raised:
        await login(world.services, email, password, request_id="r3", source_address="10.0.0.4")

    assert str(raised.value.detail) == "Email or password is wrong."
    [event] = world.events("auth.login")
    assert (event.outcome, event.reason) == ("denied", reason)
    assert event.details == {}  # the first failure costs no back-off yet
    assert email not in repr(event)  # the email is never in clear
    # Counted alike, known account or not, per account key and per source address.
    assert sorted((k.partition(":")[0], r.failures) for k, r in world.db.login_throttles.items()) == [
        ("account", 1),
        ("address", 1),
    ]


async def test_failed_logins_back_off_then_lock_the_account_and_the_right_password_does_not_help(
    world: FakeWorld,
) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    free = ACCOUNT_BACKOFF.free_failures

    async def fail() -> None:
        with pytest.raises(Unauthenticated):
            await login(world.services, "new.nurse@example.org", "wrong", request_id="r", source_address=None)

    for _ in range(free + 1):
        await fail()
    assert world.events("auth.login")[-1].details == {"account_backoff_seconds": 1}
    with pytest.raises(TooManyRequests) as backing_off:  # refused before the password is checked
        await login(world.services, "new.nurse@example.org", PASSWORD, request_id="r", source_address=None)
    assert backing_off.value.retry_after == pytest.approx(1.0)
    assert len(world.events("auth.login")) == free + 1  # a refused attempt is not audited

    assert ACCOUNT_BACKOFF.lock_after is not None
    for _ in range(ACCOUNT_BACKOFF.lock_after - free - 1):
        world.clock.advance(seconds=60)  # past each back-off (at most 32 s here), within the window
        await fail()
    assert world.events("auth.login")[-1].details == {"account_locked": True}
    world.clock.advance(hours=24)  # a lock does not wear off: an admin unlocks it
    with pytest.raises(AccountLocked):
        await login(world.services, "new.nurse@example.org", PASSWORD, request_id="r", source_address=None)


async def test_a_success_after_failures_clears_the_accounts_count(world: FakeWorld) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await login(world.services, "new.nurse@example.org", "wrong", request_id="r", source_address=None)
    assert [r.failures for r in world.db.login_throttles.values()] == [2]

    await login(world.services, "new.nurse@example.org", PASSWORD, request_id="r", source_address=None)

    assert world.db.login_throttles == {}


async def test_everyone_reads_their_own_profile(world: FakeWorld) -> None:
    org = world.organization()
    for role in Role:
        actor = world.actor(role, org.id)
        assert (await profile(world.services, actor)).id == actor.user_id
    assert {e.outcome for e in world.events("auth.profile")} == {"success"}
