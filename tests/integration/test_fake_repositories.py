"""The fakes the workflow tests run on behave like the PostgreSQL repositories they stand in for:
each scenario runs against both (tests/support/fakes.py and integrations/db), so a workflow test
on fakes shows what the service would do.

Longer than 400 lines because each scenario runs twice, on the fake and on PostgreSQL, through the
module's fixtures (``uow``, ``units``, ``reads``) and shared record builders, and the scenarios
follow tests/support/fakes.py, itself one module; split, those fixtures and builders would be
copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.audit import AuditEvent
from engine.effects import TextMessage
from engine.errors import Conflict
from engine.login_throttle import ACCOUNT_PREFIX, Backoff
from engine.model import DeliveryState, Purpose, RecipientType, RiskLevel, Role
from engine.ports.consents import NewConsent
from engine.ports.identity import NewUser
from engine.ports.messaging import NewDelivery, NewExternalParticipant, NewSend
from engine.ports.patients import NewPatient, PatientRelation
from engine.ports.policy import NewPolicyProposal, ProposalState
from engine.sms import CHANNEL_RECIPIENT
from integrations.db.patient_reads import PgPatientReadUnitOfWork
from integrations.db.send_uow import PgSendUnitOfWork, create_send_pool
from integrations.db.uow import SqlUnitOfWork
from tests.support.database import asyncpg_dsn
from tests.support.fakes import FakeDatabase, FakePatientReadUnitOfWork, FakeSendUnitOfWork, FakeUnitOfWork

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


_REASON = "Unconscious on arrival, no history"


def _phone() -> str:
    return f"+1555{secrets.randbelow(10**7):07d}"


def _consent(patient_id: int, recorded_by: int, **recipient: Any) -> NewConsent:
    kind = RecipientType.EXTERNAL if "external_phone_number" in recipient else RecipientType.ORGANIZATION
    values: dict[str, Any] = {
        "organization_id": None,
        "compliance_group_id": None,
        "external_phone_number": None,
        "external_name": None,
        **recipient,
    }
    start = datetime.now(UTC) - timedelta(days=1)
    return NewConsent(
        patient_id,
        kind,
        purpose=Purpose.TREATMENT,
        effective_at=start,
        expires_at=None,
        recorded_by=recorded_by,
        **values,
    )


async def _clinic(u: Any) -> tuple[Any, Any, Any]:
    """An organization, a staff member in it, and a patient of it."""
    org = await u.organizations.add(_name("Clinic"), self_registration=True)
    nurse = await u.users.add(_user(org.id))
    patient = await u.patients.add(NewPatient(org.id, "Ann", "Lee", None, RiskLevel.LOW, nurse.id))
    return org, nurse, patient


async def _texting_conversation(
    u: Any, org: Any, nurse: Any, patient: Any, number: str, member_ids: list[int]
) -> tuple[Any, Any]:
    """A consent to text ``number`` about the patient, and a conversation with it as its guest."""
    consent = await u.consents.add(
        _consent(patient.id, nurse.id, external_phone_number=number, external_name="Sam")
    )
    conversation = await u.conversations.add(
        patient_id=patient.id,
        title="Chat",
        organization_id=org.id,
        created_by=nurse.id,
        member_ids=member_ids,
        external=[NewExternalParticipant(number, "Sam", None, consent.id)],
    )
    return consent, conversation


async def test_a_contact_directory_lists_a_number_once_per_organization(uow: UowFactory) -> None:
    number = _phone()
    async with uow() as u:
        org, nurse, _ = await _clinic(u)
        other = await u.organizations.add(_name("Other"), self_registration=True)
        contact = await u.contacts.add(org.id, number, "Pharmacy", nurse.id)
        also_other = await u.contacts.add(other.id, number, "Pharmacy", nurse.id)
        with pytest.raises(Conflict):
            await u.contacts.add(org.id, number, "Again", nurse.id)
        await u.commit()
    async with uow() as u:
        listed = await u.contacts.list(org.id)
        not_theirs = await u.contacts.remove(other.id, contact.id)
        removed, again = (
            await u.contacts.remove(org.id, contact.id),
            await u.contacts.remove(org.id, contact.id),
        )
        left = await u.contacts.list(org.id)
    assert [(c.id, c.phone_number, c.name, c.added_by) for c in listed] == [
        (contact.id, number, "Pharmacy", nurse.id)
    ]
    assert also_other.organization_id == other.id
    assert (not_theirs, removed, again, left) == (False, True, False, [])


async def test_consents_are_recorded_revoked_under_lock_and_each_change_is_numbered(uow: UowFactory) -> None:
    async with uow() as u:
        _, nurse, patient = await _clinic(u)
        partner = await u.organizations.add(_name("Partner"), self_registration=True)
        consent = await u.consents.add(_consent(patient.id, nurse.id, organization_id=partner.id))
        first = await u.consent_lifecycle.record_change(consent.id, patient.id, "recorded")
        await u.commit()
    at = datetime.now(UTC).replace(microsecond=0)
    async with uow() as u:
        locked = await u.consent_lifecycle.get_for_update(consent.id)
        revoked = await u.consent_lifecycle.revoke(consent.id, revoked_by=nurse.id, reason="asked", at=at)
        second = await u.consent_lifecycle.record_change(consent.id, patient.id, "revoked")
        await u.commit()
    async with uow() as u:
        listed = await u.consents.list_for_patient(patient.id)
        missing = await u.consent_lifecycle.get_for_update(consent.id + 10_000_000)
    assert locked == consent
    assert (consent.recipient_type, consent.organization_id, consent.revoked_at) == (
        RecipientType.ORGANIZATION,
        partner.id,
        None,
    )
    assert (revoked.revoked_at, revoked.revoked_by, revoked.revocation_reason) == (at, nurse.id, "asked")
    assert listed == [revoked]
    assert second > first
    assert missing is None


async def test_expired_consents_are_claimed_oldest_first_until_swept_and_never_when_revoked(
    uow: UowFactory,
) -> None:
    now = datetime.now(UTC)
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        partner = await u.organizations.add(_name("Partner"), self_registration=True)

        def expiring(at: datetime) -> NewConsent:
            consent = _consent(patient.id, nurse.id, organization_id=partner.id)
            return dataclasses.replace(consent, effective_at=at - timedelta(days=1), expires_at=at)

        later = await u.consents.add(expiring(now - timedelta(minutes=1)))
        older = await u.consents.add(expiring(now - timedelta(hours=1)))
        revoked = await u.consents.add(expiring(now - timedelta(hours=2)))
        current = await u.consents.add(expiring(now + timedelta(hours=1)))
        await u.consent_lifecycle.revoke(revoked.id, revoked_by=nurse.id, reason="asked", at=now)
        await u.commit()
    ours = {later.id, older.id, revoked.id, current.id}
    async with uow() as u:
        claimed = [c for c in await u.consent_lifecycle.claim_expired(now, 10_000) if c.consent.id in ours]
        await u.consent_lifecycle.mark_expiry_swept(older.id, now)
        await u.commit()
    async with uow() as u:
        again = [c for c in await u.consent_lifecycle.claim_expired(now, 10_000) if c.consent.id in ours]
    assert [(c.consent.id, c.patient_organization_id) for c in claimed] == [
        (older.id, org.id),
        (later.id, org.id),
    ]
    assert claimed[0].consent == older
    assert [c.consent.id for c in again] == [later.id]


async def test_conversations_carry_members_and_numbered_external_participants(uow: UowFactory) -> None:
    number = _phone()
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        colleague = await u.users.add(_user(org.id))
        consent = await u.consents.add(
            _consent(patient.id, nurse.id, external_phone_number=number, external_name="Sam")
        )
        guest = NewExternalParticipant(number, "Sam", None, consent.id)
        first = await u.conversations.add(
            patient_id=patient.id,
            title="Discharge",
            organization_id=org.id,
            created_by=nurse.id,
            member_ids=[colleague.id, nurse.id, nurse.id],
            external=[guest],
        )
        second = await u.conversations.add(
            patient_id=patient.id,
            title="Follow-up",
            organization_id=org.id,
            created_by=nurse.id,
            member_ids=[nurse.id],
            external=[guest],
        )
        await u.commit()
    async with uow() as u:
        loaded = await u.conversations.get(first.id)
        by_channel = await u.conversations.by_channel(first.channel_url)
        nowhere = await u.conversations.by_channel("caremsg_none")
        page = await u.conversations.list_for_member(nurse.id, None, 1)
        rest = await u.conversations.list_for_member(nurse.id, page.next_cursor, 1)
        routes = await u.conversations.reply_routes(number)
        covered = await u.consent_lifecycle.externals_admitted_by(consent.id)
        await u.consent_lifecycle.remove_members(first.id, [colleague.id])
        await u.consent_lifecycle.remove_external(covered[0].participant_id, datetime.now(UTC))
        await u.opt_outs.set(number, True, "SM1")
        await u.commit()
    async with uow() as u:
        about_patient = await u.consent_lifecycle.patient_conversations(patient.id)
        still_covered = await u.consent_lifecycle.externals_admitted_by(consent.id)
        routes_after = await u.conversations.reply_routes(number)
    assert loaded == first == by_channel
    assert nowhere is None
    assert first.member_ids == tuple(sorted({nurse.id, colleague.id}))
    assert first.channel_url.startswith("caremsg_")
    (external,) = first.external_participants
    assert (external.phone_number, external.display_name, external.consent_id) == (number, "Sam", consent.id)
    assert external.chat_user_id.startswith("ext_")
    assert ([c.id for c in page.items + rest.items], rest.next_cursor) == ([first.id, second.id], None)
    # Nothing was texted yet: the newest admission first; reply codes count up per number.
    assert [(r.conversation_id, r.reply_code, r.active, r.opted_out) for r in routes] == [
        (second.id, 2, True, False),
        (first.id, 1, True, False),
    ]
    assert [c.conversation_id for c in covered] == [first.id, second.id]
    assert [c.member_ids for c in about_patient] == [(nurse.id,), (nurse.id,)]
    assert [c.conversation_id for c in still_covered] == [second.id]
    # The number's STOP is on every route of it.
    assert [(r.conversation_id, r.active, r.opted_out) for r in routes_after] == [
        (second.id, True, True),
        (first.id, False, True),
    ]


async def test_posted_messages_their_deliveries_read_receipts_and_opt_outs(uow: UowFactory) -> None:
    number = _phone()
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        reader = await u.users.add(_user(org.id))
        consent, conversation = await _texting_conversation(
            u, org, nurse, patient, number, [nurse.id, reader.id]
        )
        message = await u.messages.add_posted(conversation.id, nurse.id, "Hello", 41, 1_000)
        repeat = await u.messages.add_posted(conversation.id, nurse.id, "Hello", 41, 1_000)
        assert message is not None
        participant = conversation.external_participants[0].id
        await u.deliveries.add(
            message.id,
            [
                NewDelivery(CHANNEL_RECIPIENT, DeliveryState.SENT, provider_ts_ms=1_000),
                NewDelivery(f"sms:{participant}", DeliveryState.QUEUED, participant, content="notification"),
            ],
        )
        await u.outbox.enqueue(TextMessage(conversation.id, message.id, 1))
        stopped = await u.opt_outs.set(number, True, "SM1")
        stopped_again = await u.opt_outs.set(number, True, "SM2")
        await u.commit()
    async with uow() as u:
        recipients = await u.deliveries.sms_recipients(conversation.id, patient.id)
        own_read = await u.deliveries.mark_read(conversation.id, nurse.chat_user_id, 5_000)
        too_early = await u.deliveries.mark_read(conversation.id, reader.chat_user_id, 999)
        read = await u.deliveries.mark_read(conversation.id, reader.chat_user_id, 5_000)
        deliveries = await u.deliveries.for_messages([message.id, message.id + 10_000_000])
        stored = await u.messages.get(message.id)
        recent = await u.messages.recent(conversation.id, 10)
        sender = await u.users.by_chat_id(nurse.chat_user_id)
        started = await u.opt_outs.set(number, False, "SM3")
        started_again = await u.opt_outs.set(number, False, "SM4")
    assert repeat is None
    assert (message.text, message.chat_message_id, message.state) == ("Hello", 41, DeliveryState.SENT)
    (recipient,) = recipients
    assert (recipient.participant_id, recipient.phone_number, recipient.opted_out, recipient.removed) == (
        participant,
        number,
        True,
        False,
    )
    assert [c.consent_id for c in recipient.consents] == [consent.id]
    assert recipient.compliance_group_ids == frozenset()
    assert (own_read, too_early, read) == (0, 0, 1)
    assert [(d.recipient, d.channel, d.state) for d in deliveries[message.id]] == [
        (CHANNEL_RECIPIENT, "chat", DeliveryState.DELIVERED),
        (f"sms:{participant}", "sms", DeliveryState.QUEUED),
    ]
    assert list(deliveries) == [message.id]
    assert stored is not None
    assert stored.state == DeliveryState.DELIVERED
    assert [m.id for m in recent] == [message.id]
    assert sender == nurse
    assert (stopped, stopped_again, started, started_again) == (True, False, True, False)


async def test_read_marks_move_forward_only_and_count_what_others_sent_after_them(uow: UowFactory) -> None:
    at = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        reader = await u.users.add(_user(org.id))
        conversations = [
            await u.conversations.add(
                patient_id=patient.id,
                title=title,
                organization_id=org.id,
                created_by=nurse.id,
                member_ids=[nurse.id, reader.id],
                external=[],
            )
            for title in ("Ward", "Quiet")
        ]
        ward, quiet = conversations
        quiet_message = await u.messages.add_posted(quiet.id, nurse.id, "q", 99, 500)
        assert quiet_message is not None
        posted = []
        for n, sender in enumerate((nurse, nurse, reader, nurse)):
            message = await u.messages.add_posted(ward.id, sender.id, f"m{n}", 100 + n, 1_000 * (n + 1))
            assert message is not None
            posted.append(message)
            # The last one is not in the channel yet.
            ts = 1_000 * (n + 1) if n < 3 else None
            state = DeliveryState.SENT if ts else DeliveryState.QUEUED
            await u.deliveries.add(message.id, [NewDelivery(CHANNEL_RECIPIENT, state, provider_ts_ms=ts)])
        await u.commit()
    first, second, own, last = posted
    async with uow() as u:
        none_yet = await u.reads.unread_counts(reader.id, [c.id for c in conversations])
        moved = await u.reads.mark(ward.id, reader.id, second.id, at, "api")
        back = await u.reads.mark(ward.id, reader.id, first.id, at + timedelta(minutes=1), "chat")
        same = await u.reads.mark(ward.id, reader.id, second.id, at + timedelta(minutes=2), "chat")
        nurse_mark = await u.reads.mark(ward.id, nurse.id, own.id, at, "chat")
        await u.reads.mark(quiet.id, reader.id, quiet_message.id, at, "api")
        await u.commit()
    async with uow() as u:
        marks = await u.reads.of_conversation(ward.id)
        counts = await u.reads.unread_counts(reader.id, [c.id for c in conversations])
        nurse_counts = await u.reads.unread_counts(nurse.id, [ward.id])
        empty = await u.reads.unread_counts(reader.id, [])
        by_ts = [await u.reads.last_in_channel_by(ward.id, ts) for ts in (999, 1_000, 2_500, 10_000)]
        elsewhere = await u.reads.last_in_channel_by(quiet.id, 10_000)
        deliveries = await u.deliveries.for_messages([first.id])
    assert none_yet == {ward.id: 3, quiet.id: 1}  # the reader's own message is never unread
    assert moved[1] is True
    assert (moved[0].last_read_message_id, moved[0].read_at, moved[0].source) == (second.id, at, "api")
    assert back == (moved[0], False)
    assert same == (moved[0], False)
    assert nurse_mark[1] is True
    assert marks == {reader.id: moved[0], nurse.id: nurse_mark[0]}
    # Each conversation counted against its own mark; one with none unread may be left out.
    assert counts == {ward.id: 1}
    assert nurse_counts == {}  # after the nurse's mark only their own message: none unread
    assert empty == {}
    assert by_ts == [None, first.id, second.id, own.id]  # the last is not in the channel yet
    assert last.id > own.id
    assert elsewhere is None
    assert [d.provider_ts_ms for d in deliveries[first.id]] == [1_000]


async def test_a_patients_consents_are_listed_whole_or_only_those_disclosing_to_one_organization(
    uow: UowFactory,
) -> None:
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        partner = await u.organizations.add(_name("Partner"), self_registration=True)
        other = await u.organizations.add(_name("Other"), self_registration=True)
        group = await u.compliance_groups.add(_name("G"), None, org.id, nurse.id, [partner.id])
        direct = await u.consents.add(_consent(patient.id, nurse.id, organization_id=partner.id))
        elsewhere = await u.consents.add(_consent(patient.id, nurse.id, organization_id=other.id))
        number = await u.consents.add(
            _consent(patient.id, nurse.id, external_phone_number=_phone(), external_name="Aunt")
        )
        through_group = await u.consents.add(
            dataclasses.replace(
                _consent(patient.id, nurse.id),
                recipient_type=RecipientType.COMPLIANCE_GROUP,
                compliance_group_id=group.id,
            )
        )
        everything = await u.consents.list_for_patient(patient.id)
        partners = await u.consents.list_for_patient(patient.id, disclosed_to=partner.id)
    assert [c.id for c in everything] == [direct.id, elsewhere.id, number.id, through_group.id]
    assert [c.id for c in partners] == [direct.id, through_group.id]


async def test_an_organization_consent_lets_a_number_take_part_only_if_it_is_in_the_directory(
    uow: UowFactory,
) -> None:
    number = _phone()
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        partner = await u.organizations.add(_name("Partner"), self_registration=True)
        consent = await u.consents.add(_consent(patient.id, nurse.id, organization_id=partner.id))
        unlisted = await u.facts.external_consents(patient.id, number, partner.id)
        await u.contacts.add(partner.id, number, "Desk", nurse.id)
        listed = await u.facts.external_consents(patient.id, number, partner.id)
        elsewhere = await u.facts.external_consents(patient.id, number, org.id)
    assert unlisted == []
    assert [(c.consent_id, c.recipient_type, c.purpose) for c in listed] == [
        (consent.id, RecipientType.ORGANIZATION, "treatment")
    ]
    assert listed[0].revoked_ms is None
    assert elsewhere == []


async def test_break_glass_sessions_are_open_until_they_expire_and_listed_newest_first(
    uow: UowFactory,
) -> None:
    now = datetime.now(UTC)
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        elsewhere = await u.organizations.add(_name("ER"), self_registration=True)
        doctor = await u.users.add(_user(elsewhere.id))
        first = await u.break_glass.add(
            user_id=doctor.id,
            organization_id=elsewhere.id,
            patient_id=patient.id,
            reason=_REASON,
            expires_at=now + timedelta(hours=1),
        )
        second = await u.break_glass.add(
            user_id=doctor.id,
            organization_id=elsewhere.id,
            patient_id=patient.id,
            reason=_REASON,
            expires_at=now + timedelta(hours=1),
        )
        await u.commit()
    async with uow() as u:
        open_now = await u.break_glass.open_session(doctor.id, patient.id, now + timedelta(minutes=1))
        expired = await u.break_glass.open_session(doctor.id, patient.id, now + timedelta(hours=2))
        not_theirs = await u.break_glass.open_session(nurse.id, patient.id, now + timedelta(minutes=1))
        page = await u.break_glass.list_for_organization(org.id, None, 1)
        rest = await u.break_glass.list_for_organization(org.id, page.next_cursor, 1)
        own = await u.break_glass.list_for_organization(elsewhere.id, None, 10)
        # The relation read with the open session in the same statement (every patient read's facts).
        with_session = await u.facts.patient_relation(
            patient.id, user_id=doctor.id, break_glass_at=now + timedelta(minutes=1)
        )
        after_expiry = await u.facts.patient_relation(
            patient.id, user_id=doctor.id, break_glass_at=now + timedelta(hours=2)
        )
        not_asked = await u.facts.patient_relation(patient.id, user_id=doctor.id)
    assert (with_session, after_expiry, not_asked) == (
        PatientRelation(patient.id, org.id, False, second.id),
        PatientRelation(patient.id, org.id, False, None),
        PatientRelation(patient.id, org.id, False, None),
    )
    assert (first.patient_organization_id, first.reason, first.organization_id) == (
        org.id,
        _REASON,
        elsewhere.id,
    )
    assert (open_now, expired, not_theirs) == (second.id, None, None)
    assert ([s.id for s in page.items], page.next_cursor) == ([second.id], second.id)
    assert ([s.id for s in rest.items], rest.next_cursor) == ([first.id], None)
    assert [s.id for s in own.items] == [second.id, first.id]


async def test_each_organization_reviews_a_break_glass_session_once_and_reads_only_its_own_review(
    uow: UowFactory,
) -> None:
    now = datetime.now(UTC)
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        elsewhere = await u.organizations.add(_name("ER"), self_registration=True)
        doctor = await u.users.add(_user(elsewhere.id))
        officer = await u.users.add(_user(elsewhere.id, Role.COMPLIANCE_OFFICER))
        session = await u.break_glass.add(
            user_id=doctor.id,
            organization_id=elsewhere.id,
            patient_id=patient.id,
            reason=_REASON,
            expires_at=now + timedelta(hours=1),
        )
        theirs = await u.break_glass.mark_reviewed(
            session.id, elsewhere.id, by=officer.id, note="Ours.", at=now
        )
        twice = await u.break_glass.mark_reviewed(
            session.id, elsewhere.id, by=officer.id, note="Again", at=now
        )
        await u.commit()
    async with uow() as u:
        patients_view = await u.break_glass.get(session.id, org.id)
        ours = await u.break_glass.mark_reviewed(session.id, org.id, by=nurse.id, note="Home.", at=now)
        [listed] = (await u.break_glass.list_for_organization(org.id, None, 10)).items
        [their_listing] = (await u.break_glass.list_for_organization(elsewhere.id, None, 10)).items
        await u.commit()
    assert (theirs, twice, ours) == (True, False, True)
    assert patients_view is not None
    assert (patients_view.reviewed_at, patients_view.reviewed_by, patients_view.review_note) == (
        None,
        None,
        None,
    )
    assert (listed.reviewed_by, listed.review_note) == (nurse.id, "Home.")
    assert (their_listing.reviewed_by, their_listing.review_note) == (officer.id, "Ours.")


async def test_an_account_update_changes_only_the_fields_given(uow: UowFactory) -> None:
    async with uow() as u:
        org = await u.organizations.add(_name("Org"), self_registration=True)
        user = await u.users.add(_user(org.id))
        await u.commit()
    async with uow() as u:
        promoted = await u.users.update_account(user.id, role=Role.PEER_SUPPORT)
        deactivated = await u.users.update_account(
            user.id, is_active=False, sessions_valid_after=datetime.now(UTC)
        )
        await u.commit()
    async with uow() as u:
        stored = await u.users.get(user.id)
        by_chat = await u.users.by_chat_id(user.chat_user_id)
    assert (promoted.role, promoted.is_active) == (Role.PEER_SUPPORT, True)
    assert (deactivated.role, deactivated.is_active, deactivated.email) == (
        Role.PEER_SUPPORT,
        False,
        user.email,
    )
    assert stored == deactivated
    assert by_chat is None  # only active accounts are found by their chat id


@pytest.fixture(params=["fake", "postgres"])
async def units(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[tuple[UowFactory, UowFactory]]:
    """The general unit of work and the send path's, over one store."""
    if request.param == "fake":
        database = FakeDatabase()
        yield (lambda: FakeUnitOfWork(database)), (lambda: FakeSendUnitOfWork(database))
        return
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    pool = await create_send_pool(asyncpg_dsn(database_url), max_size=2, statement_timeout_ms=10_000)
    try:
        yield (lambda: SqlUnitOfWork(sessions)), (lambda: PgSendUnitOfWork(pool))
    finally:
        await pool.close()
        await engine.dispose()


async def test_the_send_path_reads_the_senders_relation_and_stores_a_send_whole(
    units: tuple[UowFactory, UowFactory],
) -> None:
    uow, send_uow = units
    number = _phone()
    async with uow() as u:
        org, nurse, patient = await _clinic(u)
        outsider = await u.users.add(_user(org.id))
        team = await u.care_teams.create(patient.id, "Team", org.id, nurse.id)
        await u.care_teams.add_member(team.id, nurse.id, nurse.id)
        consent, conversation = await _texting_conversation(u, org, nurse, patient, number, [nurse.id])
        await u.commit()
    participant = conversation.external_participants[0].id
    now = datetime.now(UTC)
    async with send_uow() as s:
        context = await s.context(conversation.id, nurse.id, now)
        stranger = await s.context(conversation.id, outsider.id, now)
        missing = await s.context(conversation.id + 10_000_000, nurse.id, now)
        assert context is not None
        created_at = await s.commit(
            NewSend(
                context.message_id,
                conversation.id,
                nurse.id,
                "Seen at 9.",
                (
                    NewDelivery(CHANNEL_RECIPIENT, DeliveryState.QUEUED),
                    NewDelivery(
                        f"sms:{participant}", DeliveryState.QUEUED, participant, content="notification"
                    ),
                ),
            )
        )
    async with uow() as u:
        stored = await u.messages.get(context.message_id)
        deliveries = await u.deliveries.for_messages([context.message_id])
    assert (context.patient_id, context.patient_organization_id) == (patient.id, org.id)
    assert (context.is_member, context.on_care_team, context.break_glass_session_id) == (True, True, None)
    assert [(r.participant_id, [c.consent_id for c in r.consents]) for r in context.sms_recipients] == [
        (participant, [consent.id])
    ]
    assert stranger is not None
    assert (stranger.is_member, stranger.on_care_team) == (False, False)
    assert missing is None
    assert stored is not None
    assert (stored.text, stored.sender_id, stored.state, stored.created_at) == (
        "Seen at 9.",
        nurse.id,
        DeliveryState.QUEUED,
        created_at,
    )
    assert [(d.recipient, d.state) for d in deliveries[context.message_id]] == [
        (CHANNEL_RECIPIENT, DeliveryState.QUEUED),
        (f"sms:{participant}", DeliveryState.QUEUED),
    ]


@dataclass
class Reads:
    """The general unit of work and the patient read's, over one store, and what that store holds
    of the audit events of one request."""

    uow: UowFactory
    read_uow: UowFactory
    stored: Callable[[str], Awaitable[list[tuple[str, str]]]]


@pytest.fixture(params=["fake", "postgres"])
async def reads(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Reads]:
    if request.param == "fake":
        database = FakeDatabase()

        async def in_memory(request_id: str) -> list[tuple[str, str]]:
            return [(e.event, e.outcome) for e in database.audit if e.request_id == request_id]

        yield Reads(lambda: FakeUnitOfWork(database), lambda: FakePatientReadUnitOfWork(database), in_memory)
        return
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    pool = await create_send_pool(asyncpg_dsn(database_url), max_size=2, statement_timeout_ms=10_000)

    async def in_postgres(request_id: str) -> list[tuple[str, str]]:
        async with pool.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT event, outcome FROM audit_events WHERE request_id = $1 ORDER BY id", request_id
            )
        return [(r["event"], r["outcome"]) for r in rows]

    try:
        yield Reads(lambda: SqlUnitOfWork(sessions), lambda: PgPatientReadUnitOfWork(pool), in_postgres)
    finally:
        await pool.close()
        await engine.dispose()


def _read_event(request_id: str, patient_id: int) -> AuditEvent:
    return AuditEvent(
        "decision",
        "patient.read",
        "success",
        datetime.now(UTC),
        request_id=request_id,
        resource_type="patient",
        resource_id=str(patient_id),
        patient_id=patient_id,
        decision="allow",
    )


async def test_the_patient_read_reads_the_relation_with_the_record_and_stores_its_audit_whole(
    reads: Reads,
) -> None:
    now = datetime.now(UTC)
    async with reads.uow() as u:
        org, nurse, patient = await _clinic(u)
        team = await u.care_teams.create(patient.id, "Team", org.id, nurse.id)
        await u.care_teams.add_member(team.id, nurse.id, nurse.id)
        elsewhere = await u.organizations.add(_name("ER"), self_registration=True)
        doctor = await u.users.add(_user(elsewhere.id))
        session = await u.break_glass.add(
            user_id=doctor.id,
            organization_id=elsewhere.id,
            patient_id=patient.id,
            reason=_REASON,
            expires_at=now + timedelta(hours=1),
        )
        await u.commit()
    committed, abandoned = _name("read"), _name("read")
    async with reads.read_uow() as r:
        on_team = await r.read(patient.id, user_id=nurse.id, at=now + timedelta(minutes=1))
        in_session = await r.read(patient.id, user_id=doctor.id, at=now + timedelta(minutes=1))
        expired = await r.read(patient.id, user_id=doctor.id, at=now + timedelta(hours=2))
        missing = await r.read(patient.id + 10_000_000, user_id=nurse.id, at=now)
        r.audit.record(_read_event(committed, patient.id))
        await r.commit()
    async with reads.read_uow() as r:
        r.audit.record(_read_event(abandoned, patient.id))
    async with reads.uow() as u:
        stored = await u.patients.get(patient.id)

    assert on_team is not None
    assert in_session is not None
    assert expired is not None
    assert on_team.patient == stored
    assert on_team.relation == PatientRelation(patient.id, org.id, True, None)
    assert in_session.relation == PatientRelation(patient.id, org.id, False, session.id)
    assert expired.relation.break_glass_session_id is None
    assert missing is None
    assert await reads.stored(committed) == [("decision", "success")]
    assert await reads.stored(abandoned) == [("decision", "failure")]  # left without commit: on record


async def test_policy_proposals_are_decided_once_superseded_together_and_kept_as_history(
    uow: UowFactory,
) -> None:
    file = f"tests/{secrets.token_hex(4)}.csv"  # a file of its own: other tests' proposals stay out
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    async with uow() as u:
        org = await u.organizations.add(_name("Org"), self_registration=True)
        alice = await u.users.add(_user(org.id, Role.COMPLIANCE_OFFICER))
        bob = await u.users.add(_user(org.id, Role.COMPLIANCE_OFFICER))
        first = await u.policy_proposals.add(
            NewPolicyProposal(file, "a\nb\n", "a\n", "add b", alice.id, org.id), at=now
        )
        second = await u.policy_proposals.add(
            NewPolicyProposal(file, "a\nc\n", "a\n", "add c", alice.id, org.id), at=now
        )
        # Based on what the first leaves: not superseded when the first is applied.
        third = await u.policy_proposals.add(
            NewPolicyProposal(file, "a\nb\nd\n", "a\nb\n", "add d", bob.id, org.id), at=now
        )
        await u.commit()
    async with uow() as u:
        await u.policy_proposals.lock_files()
        assert await u.policy_proposals.decide(
            first.id, ProposalState.APPLIED, by=bob.id, at=now, note="ok", applied_version="v2"
        )
        assert not await u.policy_proposals.decide(
            first.id, ProposalState.REJECTED, by=bob.id, at=now, note="again"
        )
        superseded = await u.policy_proposals.supersede(file, applied=first, by=bob.id, at=now)
        await u.commit()
    async with uow() as u:
        applied = await u.policy_proposals.get(first.id)
        others = [await u.policy_proposals.get(p.id) for p in (second, third)]
        history = await u.policy_proposals.history(file, 10)
        open_ones = await u.policy_proposals.list(
            state=ProposalState.PROPOSED, file=file, before=None, limit=10
        )
        everything = await u.policy_proposals.list(state=None, file=file, before=None, limit=2)
        rest = await u.policy_proposals.list(state=None, file=file, before=everything.next_cursor, limit=2)
        missing = await u.policy_proposals.get(third.id + 10_000_000)
    assert first.state is ProposalState.PROPOSED
    assert first.organization_id == org.id
    assert first.content_sha256 == hashlib.sha256(b"a\nb\n").hexdigest()
    assert first.base_sha256 == hashlib.sha256(b"a\n").hexdigest()
    assert applied is not None
    assert (applied.state, applied.decided_by, applied.decision_note, applied.applied_version) == (
        ProposalState.APPLIED,
        bob.id,
        "ok",
        "v2",
    )
    assert superseded == (second.id,)
    assert [(o.state, o.decision_note) for o in others if o is not None] == [
        (ProposalState.SUPERSEDED, f"superseded by proposal {first.id}"),
        (ProposalState.PROPOSED, None),
    ]
    assert [p.id for p in history] == [first.id]
    assert [p.id for p in open_ones.items] == [third.id]
    assert [p.id for p in everything.items + rest.items] == [third.id, second.id, first.id]
    assert rest.next_cursor is None
    assert missing is None
