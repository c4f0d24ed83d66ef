"""Self-registration's pace, on fakes: per source (an IPv6 subscriber's /64 is one), before the
costly part, and one notice per window to the owner of an address someone keeps trying."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.errors import InvalidInput, TooManyRequests
from engine.login_throttle import Backoff
from engine.model import Role
from engine.services import EngineSettings
from engine.workflows.identity import Register, register
from tests.support.fakes import FakeWorld, fake_services

PASSWORD = "correct horse battery"


def _register(organization_id: int | None, role: Role = Role.CARE_TEAM_MEMBER, email: str = "") -> Register:
    return Register(email or "New.Nurse@Example.org", PASSWORD, "New", "Nurse", role, organization_id)


def _paced(free: int) -> EngineSettings:
    return EngineSettings(registration_backoff=Backoff(free, 60.0, 3600.0, timedelta(hours=1)))


async def test_a_source_past_its_free_registrations_waits_before_anything_costly_runs() -> None:
    world = fake_services(_paced(free=2))
    org = world.organization()
    for n in range(3):  # two free, the third earns a minute
        await register(
            world.services,
            _register(org.id, email=f"n{n}@example.org"),
            request_id="r",
            source_address="192.0.2.1",
        )

    # A password its checks would refuse: the wait is answered first, before they run.
    weak = Register("n9@example.org", "short", "New", "Nurse", Role.CARE_TEAM_MEMBER, org.id)
    with pytest.raises(TooManyRequests) as raised:
        await register(world.services, weak, request_id="r", source_address="192.0.2.1")

    assert raised.value.retry_after == 60.0
    assert len(world.db.users) == 3
    # Another source is not held back; nor is this one once the wait is over.
    await register(
        world.services,
        _register(org.id, email="other@example.org"),
        request_id="r",
        source_address="192.0.2.2",
    )
    world.clock.advance(seconds=61)
    await register(
        world.services,
        _register(org.id, email="later@example.org"),
        request_id="r",
        source_address="192.0.2.1",
    )
    assert len(world.db.users) == 5


async def test_an_ipv6_subscriber_is_one_source_whichever_address_it_registers_from() -> None:
    world = fake_services(_paced(free=1))
    org = world.organization()
    await register(
        world.services,
        _register(org.id, email="a@example.org"),
        request_id="r",
        source_address="2001:db8:7::1",
    )
    await register(
        world.services,
        _register(org.id, email="b@example.org"),
        request_id="r",
        source_address="2001:db8:7::2",
    )

    with pytest.raises(TooManyRequests):
        await register(
            world.services,
            _register(org.id, email="c@example.org"),
            request_id="r",
            source_address="2001:db8:7::3",
        )


async def test_an_accounts_owner_hears_of_attempts_on_their_address_once_per_window(world: FakeWorld) -> None:
    org = world.organization()
    await register(world.services, _register(org.id), request_id="r", source_address=None)
    [owner] = world.db.users.values()

    for source in ("192.0.2.1", "198.51.100.2", "203.0.113.3"):  # each attempt answered the same ...
        assert (
            await register(world.services, _register(org.id), request_id="r", source_address=source) is None
        )
    world.clock.advance(minutes=61)
    await register(world.services, _register(org.id), request_id="r", source_address="192.0.2.1")

    # ... and audited, but the owner is told once in the hour, then again after it.
    assert len([e for e in world.events("auth.register") if e.reason == "email_taken"]) == 4
    assert world.notifier.told == [
        ("registration_received", owner.id),
        ("registration_attempted", owner.id),
        ("registration_attempted", owner.id),
    ]


async def test_registrations_refused_for_their_organization_or_password_count_too() -> None:
    """Each cost a password estimate and a hash: refusing them later must not make them free."""
    world = fake_services(_paced(free=2))
    closed = world.organization(self_registration=False)
    weak = Register("w@example.org", "short", "New", "Nurse", Role.CARE_TEAM_MEMBER, closed.id)
    for cmd in (
        _register(closed.id, email="a@example.org"),
        weak,
        _register(closed.id, email="b@example.org"),
    ):
        with pytest.raises(InvalidInput):
            await register(world.services, cmd, request_id="r", source_address="192.0.2.9")

    with pytest.raises(TooManyRequests):
        await register(
            world.services,
            _register(closed.id, email="c@example.org"),
            request_id="r",
            source_address="192.0.2.9",
        )
