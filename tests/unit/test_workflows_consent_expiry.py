"""The consent-expiry sweep on fakes: once a consent's expiry passes, the staff of other
organizations it alone covered leave the patient's conversations and external participants it
admitted stop receiving SMS (a RemoveMembers effect each, audited with no actor), exactly as a
revocation ends them; a consent is swept once; one not yet expired, or revoked, is left alone
(tests/api/test_consent_lifecycle.py covers the sweep in a running service on PostgreSQL)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from engine.effects import RemoveMembers
from engine.model import Actor, Patient, Purpose, RecipientType, Role
from engine.workflows.consents import (
    EXPIRE,
    RecordConsent,
    RevokeConsent,
    record_consent,
    revoke_consent,
    sweep_expired_consents,
)
from engine.workflows.conversations import ExternalMember, StartConversation, start_conversation
from engine.workflows.patients import add_care_team_member
from tests.support.fakes import FakeWorld
from tests.support.worlds import officer_and_patient

PHONE = "+15550102031"


def _to(world: FakeWorld, patient: Patient, partner_id: int, **fields: Any) -> RecordConsent:
    cmd = RecordConsent(
        patient.id,
        RecipientType.ORGANIZATION,
        Purpose.TREATMENT,
        organization_id=partner_id,
        expires_at=world.clock() + timedelta(hours=1),
    )
    return dataclasses.replace(cmd, **fields)


async def _conversation_with_outsider(
    world: FakeWorld, nurse: Actor, patient: Patient, partner_id: int
) -> tuple[int, Actor]:
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner_id)
    [team] = world.db.care_teams.values()
    await add_care_team_member(world.services, nurse, team.id, outsider.user_id)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, outsider.user_id])
    )
    return conversation.id, outsider


async def test_nothing_is_swept_before_the_expiry(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    await record_consent(world.services, officer, _to(world, patient, partner))
    conversation_id, outsider = await _conversation_with_outsider(world, nurse, patient, partner)
    outbox_before = list(world.db.outbox)
    world.clock.advance(minutes=59)

    assert await sweep_expired_consents(world.services) == 0

    assert world.db.conversation_members[conversation_id] == (nurse.user_id, outsider.user_id)
    assert world.db.outbox == outbox_before
    assert world.events(EXPIRE) == []


async def test_an_expired_consent_takes_the_members_it_covered_out_of_the_channel_once(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, _to(world, patient, partner))
    conversation_id, outsider = await _conversation_with_outsider(world, nurse, patient, partner)
    outbox_before, wakes_before = len(world.db.outbox), world.delivery.wakes
    world.clock.advance(hours=1)

    assert await sweep_expired_consents(world.services) == 1

    assert world.db.conversation_members[conversation_id] == (nurse.user_id,)
    chat_id = world.db.users[outsider.user_id].chat_user_id
    assert world.db.outbox[outbox_before:] == [RemoveMembers(conversation_id, (chat_id,))]
    assert world.db.consent_expiry_swept == {consent.id: world.clock()}
    assert world.delivery.wakes == wakes_before + 1
    expired, removed = world.events(EXPIRE)
    assert (expired.event, expired.actor_id, expired.resource_id, expired.patient_id) == (
        "consent.expired",
        None,
        str(consent.id),
        patient.id,
    )
    assert expired.details["recipient_type"] == "organization"
    assert (removed.event, removed.actor_id, removed.resource_id, removed.details) == (
        "conversation.member_removed",
        None,
        str(conversation_id),
        {"consent_id": consent.id, "subject_user_id": outsider.user_id},
    )

    world.clock.advance(minutes=5)
    assert await sweep_expired_consents(world.services) == 0  # swept once
    assert len(world.events(EXPIRE)) == 2


async def test_a_member_another_consent_still_covers_stays(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    await record_consent(world.services, officer, _to(world, patient, partner))
    await record_consent(
        world.services,
        officer,
        _to(world, patient, partner, purpose=Purpose.CARE_COORDINATION, expires_at=None),
    )
    conversation_id, outsider = await _conversation_with_outsider(world, nurse, patient, partner)
    outbox_before = list(world.db.outbox)
    world.clock.advance(hours=2)

    assert await sweep_expired_consents(world.services) == 1

    assert world.db.conversation_members[conversation_id] == (nurse.user_id, outsider.user_id)
    assert world.db.outbox == outbox_before
    assert [e.event for e in world.events(EXPIRE)] == ["consent.expired"]


async def test_an_external_participant_admitted_under_an_expired_consent_stops_receiving_sms(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    consent = await record_consent(
        world.services,
        officer,
        RecordConsent(
            patient.id,
            RecipientType.EXTERNAL,
            Purpose.TREATMENT,
            external_phone_number=PHONE,
            external_name="Sam",
            expires_at=world.clock() + timedelta(minutes=30),
        ),
    )
    conversation = await start_conversation(
        world.services,
        nurse,
        StartConversation(patient.id, "Ward", [nurse.user_id], [ExternalMember(PHONE, "Sam")]),
    )
    [row] = world.db.externals.values()
    outbox_before = len(world.db.outbox)
    world.clock.advance(minutes=31)

    assert await sweep_expired_consents(world.services) == 1

    assert world.db.externals[row.id].removed_at == world.clock()
    assert world.db.outbox[outbox_before:] == [RemoveMembers(conversation.id, (row.chat_user_id,))]
    effects = [(e.event, e.details) for e in world.events(EXPIRE) if e.event != "consent.expired"]
    assert effects == [
        ("conversation.external_removed", {"consent_id": consent.id, "external_participant_id": row.id})
    ]


async def test_a_revoked_consent_is_not_swept_again_when_it_would_have_expired(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, _to(world, patient, partner))
    await _conversation_with_outsider(world, nurse, patient, partner)
    await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Patient asked."))
    world.clock.advance(hours=2)

    assert await sweep_expired_consents(world.services) == 0
    assert world.events(EXPIRE) == []


async def test_the_sweep_takes_a_batch_at_a_time_oldest_expiry_first(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    partners = [world.organization().id for _ in range(3)]
    consents = [
        await record_consent(
            world.services,
            officer,
            _to(world, patient, partner, expires_at=world.clock() + timedelta(minutes=10 - i)),
        )
        for i, partner in enumerate(partners)
    ]
    world.clock.advance(minutes=11)

    assert await sweep_expired_consents(world.services, limit=2) == 2
    assert set(world.db.consent_expiry_swept) == {consents[2].id, consents[1].id}
    assert await sweep_expired_consents(world.services, limit=2) == 1
    assert set(world.db.consent_expiry_swept) == {c.id for c in consents}


async def test_a_consent_recorded_after_it_had_expired_let_nobody_in_and_removes_nobody(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id])
    )
    conversation_id = conversation.id
    # A member of the partner whom no consent covers (as emergency access leaves one): a consent for
    # the partner recorded after it had expired never covered them, so its sweep does not touch them.
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner)
    world.db.conversation_members[conversation_id] += (outsider.user_id,)
    late = _to(
        world,
        patient,
        partner,
        effective_at=world.clock() - timedelta(days=2),
        expires_at=world.clock() - timedelta(days=1),
    )
    consent = await record_consent(world.services, officer, late)
    outbox_before = list(world.db.outbox)

    assert await sweep_expired_consents(world.services) == 1

    assert world.db.conversation_members[conversation_id] == (nurse.user_id, outsider.user_id)
    assert world.db.outbox == outbox_before
    assert world.db.consent_expiry_swept == {consent.id: world.clock()}
    assert [e.event for e in world.events(EXPIRE)] == ["consent.expired"]
