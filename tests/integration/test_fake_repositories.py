"""The fakes the workflow tests run on behave like the PostgreSQL repositories they stand in for:
each scenario runs against both (tests/support/fakes.py and integrations/db), so a workflow test
on fakes shows what the service would do."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.errors import Conflict
from engine.login_throttle import ACCOUNT_PREFIX, Backoff
from engine.model import RiskLevel, Role
from engine.ports import NewPatient, NewUser
from integrations.db.uow import SqlUnitOfWork
from tests.support.fakes import FakeDatabase, FakeUnitOfWork

UowFactory = Callable[[], Any]


@pytest.fixture(params=["fake", "postgres"])
async def uow(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[UowFactory]:
    if request.param == "fake":
        database = FakeDatabase()
        yield lambda: FakeUnitOfWork(database)
        return
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield lambda: SqlUnitOfWork(sessions)
    finally:
        await engine.dispose()


def _name(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(4)}"


def _user(organization_id: int, role: Role = Role.CARE_TEAM_MEMBER) -> NewUser:
    return NewUser(f"u.{secrets.token_hex(4)}@example.org", "hash", "A", "B", role, organization_id)


async def test_what_is_not_committed_is_not_stored(uow: UowFactory) -> None:
    name = _name("Uncommitted")
    async with uow() as u:
        await u.organizations.add(name, self_registration=True)
    async with uow() as u:
        assert await u.organizations.by_name(name) is None


async def test_organizations_are_found_by_id_and_name_and_a_name_is_taken_once(uow: UowFactory) -> None:
    name = _name("Clinic")
    async with uow() as u:
        org = await u.organizations.add(name, self_registration=False)
        await u.commit()
    async with uow() as u:
        assert await u.organizations.get(org.id) == org
        assert await u.organizations.by_name(name) == org
        assert await u.organizations.existing([org.id, org.id + 10_000_000]) == {org.id}
        assert await u.organizations.existing([]) == set()
        with pytest.raises(Conflict):
            await u.organizations.add(name, self_registration=True)


async def test_users_are_unique_by_email_and_listed_by_organization_page_by_page(uow: UowFactory) -> None:
    async with uow() as u:
        org = await u.organizations.add(_name("Org"), self_registration=True)
        users = [await u.users.add(_user(org.id)) for _ in range(3)]
        await u.commit()
    async with uow() as u:
        first = await u.users.list_for_organization(org.id, None, 2)
        rest = await u.users.list_for_organization(org.id, first.next_cursor, 2)
        credentials = await u.users.credentials(users[0].email)
        with pytest.raises(Conflict):
            await u.users.add(_same_email(users[0]))
    assert [x.id for x in first.items + rest.items] == [x.id for x in users]
    assert first.next_cursor == users[1].id
    assert rest.next_cursor is None
    assert credentials is not None
    assert (credentials.user, credentials.password_hash) == (users[0], "hash")
    assert users[0].is_active
    assert users[0].chat_user_id.startswith("staff_")


def _same_email(user: Any) -> NewUser:
    return NewUser(user.email, "hash", "C", "D", Role.PEER_SUPPORT, user.organization_id)


async def test_patients_care_teams_and_the_relation_a_person_has_to_a_patient(uow: UowFactory) -> None:
    async with uow() as u:
        org = await u.organizations.add(_name("Org"), self_registration=True)
        nurse, other = await u.users.add(_user(org.id)), await u.users.add(_user(org.id))
        patient = await u.patients.add(
            NewPatient(org.id, "John", "Smith", date(1980, 1, 2), RiskLevel.HIGH, nurse.id)
        )
        team = await u.care_teams.create(patient.id, "Care team", org.id, nurse.id)
        assert await u.care_teams.add_member(team.id, nurse.id, nurse.id) is True
        assert await u.care_teams.add_member(team.id, nurse.id, nurse.id) is False
        with pytest.raises(Conflict):
            await u.care_teams.create(patient.id, "Second", org.id, nurse.id)
        await u.commit()
    async with uow() as u:
        on_team = await u.facts.patient_relation(patient.id, user_id=nurse.id)
        off_team = await u.facts.patient_relation(patient.id, user_id=other.id)
        missing = await u.facts.patient_relation(patient.id + 10_000_000, user_id=nurse.id)
        loaded = await u.care_teams.for_patient(patient.id)
        listed = await u.patients.list_on_care_team_of(nurse.id, None, 10)
        not_listed = await u.patients.list_on_care_team_of(other.id, None, 10)
        updated = await u.patients.update(patient.id, {"risk_level": RiskLevel.LOW, "last_name": "Smyth"})
        with pytest.raises(ValueError, match="not patient columns"):
            await u.patients.update(patient.id, {"organization_id": 1})
    assert on_team is not None
    assert (on_team.patient_organization_id, on_team.on_care_team) == (org.id, True)
    assert off_team is not None
    assert off_team.on_care_team is False
    assert missing is None
    assert loaded is not None
    assert (loaded.id, [m.user_id for m in loaded.members]) == (team.id, [nurse.id])
    assert (loaded.members[0].role, loaded.members[0].organization_id) == (nurse.role, org.id)
    assert [p.id for p in listed.items] == [patient.id]
    assert not_listed.items == ()
    assert (updated.risk_level, updated.last_name, updated.first_name) == (RiskLevel.LOW, "Smyth", "John")


async def test_organizations_list_one_and_compliance_groups_by_whom_they_are_visible_to(
    uow: UowFactory,
) -> None:
    async with uow() as u:
        owner = await u.organizations.add(_name("Owner"), self_registration=False)
        partner = await u.organizations.add(_name("Partner"), self_registration=False)
        officer = await u.users.add(_user(owner.id, Role.COMPLIANCE_OFFICER))
        owned = await u.compliance_groups.add(_name("G"), None, owner.id, officer.id, [partner.id])
        other = await u.compliance_groups.add(_name("H"), None, owner.id, officer.id, [])
        assert await u.compliance_groups.share(owned.id, partner.id, officer.id) is True
        assert await u.compliance_groups.share(owned.id, partner.id, officer.id) is False
        await u.commit()
    async with uow() as u:
        only = await u.organizations.list(None, 10, only=partner.id)
        after = await u.organizations.list(partner.id, 10, only=partner.id)
        owners = await u.compliance_groups.list(None, 10, visible_to=owner.id, owned=True, shared=True)
        partners = await u.compliance_groups.list(None, 10, visible_to=partner.id, owned=True, shared=True)
        partners_own = await u.compliance_groups.list(
            None, 10, visible_to=partner.id, owned=True, shared=False
        )
        nothing = await u.compliance_groups.list(None, 10, visible_to=owner.id, owned=False, shared=False)
        first = await u.compliance_groups.list(None, 1, visible_to=owner.id, owned=True, shared=False)
        shared = await u.compliance_groups.get(owned.id)
    assert ([o.id for o in only.items], only.next_cursor, after.items) == ([partner.id], None, ())
    assert [g.id for g in owners.items] == [owned.id, other.id]
    assert [g.id for g in partners.items] == [owned.id]
    assert (partners_own.items, nothing.items) == ((), ())
    assert ([g.id for g in first.items], first.next_cursor) == ([owned.id], owned.id)
    assert shared is not None
    assert (shared.member_organization_ids, shared.shared_with) == ((partner.id,), (partner.id,))


async def test_the_login_throttle_backs_off_forgets_after_its_window_and_a_lock_lasts(
    uow: UowFactory,
) -> None:
    key = ACCOUNT_PREFIX + secrets.token_hex(16)
    backoff = Backoff(1, 1.0, 10.0, timedelta(minutes=1), lock_after=3)
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with uow() as u:
        assert await u.login_throttle.states([key]) == {}
        free = await u.login_throttle.record_failure(key, t0, backoff)
        backing_off = await u.login_throttle.record_failure(key, t0 + timedelta(seconds=1), backoff)
        forgotten = await u.login_throttle.record_failure(key, t0 + timedelta(minutes=2), backoff)
        await u.commit()
    async with uow() as u:
        stored = await u.login_throttle.states([key, key + "-other"])
        later = t0 + timedelta(minutes=2, seconds=5)
        await u.login_throttle.record_failure(key, later, backoff)
        locking = await u.login_throttle.record_failure(key, later, backoff)
        still = await u.login_throttle.record_failure(key, later + timedelta(hours=1), backoff)
        await u.commit()
    async with uow() as u:
        locked = await u.login_throttle.states([key])
        cleared, again = await u.login_throttle.clear(key), await u.login_throttle.clear(key)
        after_clear = await u.login_throttle.states([key])
        await u.commit()
    assert (free.failures, free.blocked_until, free.locked) == (1, None, False)
    assert (backing_off.failures, backing_off.locked) == (2, False)
    assert backing_off.blocked_until == t0 + timedelta(seconds=2)
    assert (forgotten.failures, forgotten.blocked_until) == (1, None)
    assert list(stored) == [key]
    assert stored[key].failures == 1
    assert (locking.failures, locking.locked) == (3, True)
    assert (still.failures, still.locked) == (4, True)  # a lock is not forgotten with the window
    assert (locked[key].failures, locked[key].locked) == (4, True)
    assert (cleared, again, after_clear) == (True, False, {})
