"""Revoking a consent on fakes: access ends at once, staff of other organizations it covered leave the
patient's conversations (a RemoveMembers effect each), external participants admitted under it are
removed or carried by another consent naming them, each effect audited; a refusal changes nothing
(tests/api/test_consent_lifecycle.py covers the same over HTTP and PostgreSQL)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.effects import RemoveMembers
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import (
    ConsentScope,
    Purpose,
    RecipientType,
    Role,
)
from engine.workflows.consents import (
    RecordConsent,
    RevokeConsent,
    record_consent,
    revoke_consent,
)
from engine.workflows.conversations import ExternalMember, StartConversation, start_conversation
from engine.workflows.organizations import CreateComplianceGroup, create_compliance_group
from tests.support.fakes import FakeWorld
from tests.support.worlds import consent_to, officer_and_patient, outsider_on_the_team

PHONE = "+15550102030"


async def test_revoking_removes_the_members_it_covered_and_queues_their_removal_from_the_channel(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, consent_to(patient, partner))
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, outsider.user_id])
    )
    outbox_before, wakes_before = len(world.db.outbox), world.delivery.wakes
    world.clock.advance(minutes=5)

    revocation = await revoke_consent(world.services, officer, RevokeConsent(consent.id, "  Patient asked. "))

    revoked = world.db.consents[consent.id]
    assert revocation.consent == revoked
    assert (revoked.revoked_at, revoked.revoked_by, revoked.revocation_reason) == (
        world.clock(),
        officer.user_id,
        "Patient asked.",
    )
    assert revocation.removed_members == ((conversation.id, outsider.user_id),)
    assert world.db.conversation_members[conversation.id] == (nurse.user_id,)
    chat_id = world.db.users[outsider.user_id].chat_user_id
    assert world.db.outbox[outbox_before:] == [RemoveMembers(conversation.id, (chat_id,))]
    assert world.db.consent_changes[-1] == (consent.id, patient.id, "revoked")
    assert world.services.consents.covering(patient.id, partner, world.clock()) is None
    assert world.delivery.wakes == wakes_before + 1
    decision, removed = world.events("consent.revoke")
    assert (decision.outcome, decision.resource_id, decision.patient_id) == (
        "success",
        str(consent.id),
        patient.id,
    )
    assert (removed.event, removed.resource_id, removed.details) == (
        "conversation.member_removed",
        str(conversation.id),
        {"consent_id": consent.id, "subject_user_id": outsider.user_id},
    )


async def test_a_member_still_covered_by_another_consent_stays(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, consent_to(patient, partner))
    await record_consent(
        world.services, officer, consent_to(patient, partner, purpose=Purpose.CARE_COORDINATION)
    )
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, outsider.user_id])
    )
    outbox_before = list(world.db.outbox)

    revocation = await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Replaced."))

    assert revocation.removed_members == ()
    assert world.db.conversation_members[conversation.id] == (nurse.user_id, outsider.user_id)
    assert world.db.outbox == outbox_before
    assert [e.event for e in world.events("consent.revoke")] == ["decision"]


async def test_an_external_participant_is_removed_unless_another_consent_names_their_number(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    external = RecordConsent(
        patient.id,
        RecipientType.EXTERNAL,
        Purpose.TREATMENT,
        external_phone_number=PHONE,
        external_name="Sam",
    )
    first = await record_consent(world.services, officer, external)
    second = await record_consent(
        world.services, officer, dataclasses.replace(external, purpose=Purpose.CARE_COORDINATION)
    )
    conversation = await start_conversation(
        world.services,
        nurse,
        StartConversation(patient.id, "Ward", [nurse.user_id], [ExternalMember(PHONE, "Sam")]),
    )
    [row] = world.db.externals.values()
    assert row.consent_id == first.id
    outbox_before = len(world.db.outbox)

    kept = await revoke_consent(world.services, officer, RevokeConsent(first.id, "Replaced."))
    assert (kept.removed_external_participants, world.db.externals[row.id].consent_id) == ((), second.id)
    assert world.db.outbox[outbox_before:] == []

    world.clock.advance(minutes=1)
    gone = await revoke_consent(world.services, officer, RevokeConsent(second.id, "Patient asked."))

    assert gone.removed_external_participants == (row.id,)
    assert world.db.externals[row.id].removed_at == world.clock()
    assert world.db.outbox[outbox_before:] == [RemoveMembers(conversation.id, (row.chat_user_id,))]
    effects = [(e.event, e.details) for e in world.events("consent.revoke") if e.event != "decision"]
    assert effects == [
        (
            "conversation.external_readmitted",
            {"consent_id": first.id, "external_participant_id": row.id, "now_covered_by": second.id},
        ),
        ("conversation.external_removed", {"consent_id": second.id, "external_participant_id": row.id}),
    ]


async def test_a_refused_revocation_changes_nothing(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, consent_to(patient, partner))
    stranger = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    admin = world.actor(Role.ADMIN, officer.organization_id)
    changes = list(world.db.consent_changes)

    with pytest.raises(NotFound) as concealed:
        await revoke_consent(world.services, stranger, RevokeConsent(consent.id, "Not mine."))
    with pytest.raises(NotFound) as missing:
        await revoke_consent(world.services, stranger, RevokeConsent(424242, "Not mine."))
    with pytest.raises(Forbidden) as role:
        await revoke_consent(world.services, admin, RevokeConsent(consent.id, "Not mine."))
    with pytest.raises(InvalidInput) as blank:
        await revoke_consent(world.services, officer, RevokeConsent(consent.id, "   "))

    assert str(concealed.value) == str(missing.value)
    assert role.value.decision.reason == "role_not_permitted"
    assert [e.field for e in blank.value.errors] == ["reason"]
    assert world.db.consents[consent.id] == consent
    assert world.db.consent_changes == changes
    assert world.services.consents.covering(patient.id, partner, world.clock()) is not None
    assert [(e.actor_id, e.event, e.outcome) for e in world.events("consent.revoke")] == [
        (stranger.user_id, "decision", "denied"),
        (stranger.user_id, "lookup", "failure"),  # what its organization sees, as for the missing one
        (stranger.user_id, "lookup", "failure"),
        (admin.user_id, "decision", "denied"),
    ]
    assert world.events("consent.revoke")[0].details["answered"] == "not_found"


async def test_a_consent_is_revoked_only_once(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    consent = await record_consent(world.services, officer, consent_to(patient, world.organization().id))
    first = await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Patient asked."))
    world.clock.advance(minutes=1)

    with pytest.raises(Conflict):
        await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Again."))

    assert world.db.consents[consent.id] == first.consent
    assert [op for _, _, op in world.db.consent_changes] == ["recorded", "revoked"]


async def test_revoking_a_group_consent_removes_the_member_organizations_staff(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    group = await create_compliance_group(
        world.services, officer, CreateComplianceGroup("Network", None, [partner])
    )
    consent = await record_consent(
        world.services,
        officer,
        RecordConsent(
            patient.id, RecipientType.COMPLIANCE_GROUP, Purpose.TREATMENT, compliance_group_id=group.id
        ),
    )
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, outsider.user_id])
    )

    revocation = await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Network left."))

    assert revocation.removed_members == ((conversation.id, outsider.user_id),)
    assert world.db.outbox[-1] == RemoveMembers(
        conversation.id, (world.db.users[outsider.user_id].chat_user_id,)
    )


async def test_a_remaining_consent_that_does_not_cover_messaging_does_not_keep_a_member(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(world.services, officer, consent_to(patient, partner))
    await record_consent(world.services, officer, consent_to(patient, partner, purpose=Purpose.PAYMENT))
    await record_consent(
        world.services, officer, consent_to(patient, partner, scope=frozenset({ConsentScope.READ}))
    )
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, outsider.user_id])
    )

    revocation = await revoke_consent(world.services, officer, RevokeConsent(consent.id, "Patient asked."))

    assert revocation.removed_members == ((conversation.id, outsider.user_id),)
    assert world.db.conversation_members[conversation.id] == (nurse.user_id,)
