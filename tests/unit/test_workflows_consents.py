"""Recording and listing consents on fakes: who may record, the scope and purpose a consent grants,
compliance groups owned or shared, and what a refusal keeps on record (revocation is in
test_workflows_consent_revocation.py; tests/api/test_consents.py covers the same over HTTP)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import (
    ConsentScope,
    Part2Elements,
    Purpose,
    RecipientType,
    Role,
)
from engine.workflows.consents import (
    RecordConsent,
    RevokeConsent,
    list_consents,
    record_consent,
    revoke_consent,
)
from engine.workflows.organizations import (
    CreateComplianceGroup,
    ShareComplianceGroup,
    create_compliance_group,
    share_compliance_group,
)
from engine.workflows.patients import (
    UpdatePatient,
    get_patient,
    update_patient,
)
from tests.support.fakes import START, FakeWorld
from tests.support.worlds import consent_to, officer_and_patient, outsider_on_the_team


async def test_an_officer_records_a_consent_and_the_partner_is_covered_at_once(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    partner = world.organization()

    consent = await record_consent(world.services, officer, consent_to(patient, partner.id))

    assert world.db.consents == {consent.id: consent}
    assert (consent.recorded_by, consent.effective_at, consent.scope) == (
        officer.user_id,
        world.clock(),
        frozenset({ConsentScope.READ, ConsentScope.MESSAGE, ConsentScope.SMS}),
    )
    assert world.db.consent_changes == [(consent.id, patient.id, "recorded")]
    assert world.services.consents.covering(patient.id, partner.id, world.clock()) is not None
    [event] = world.events("consent.create")
    assert (event.outcome, event.resource_id, event.patient_id) == ("success", str(consent.id), patient.id)
    assert event.details["recipient_type"] == "organization"
    assert world.db.outbox == []


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN, Role.AUDITOR])
async def test_only_compliance_officers_record_consents_and_the_refusal_keeps_the_facts(
    world: FakeWorld, role: Role
) -> None:
    officer, _, patient = await officer_and_patient(world)
    actor = world.actor(role, officer.organization_id)

    with pytest.raises(Forbidden) as raised:
        await record_consent(world.services, actor, consent_to(patient, world.organization().id))

    assert raised.value.decision.reason == "role_not_permitted"
    assert (world.db.consents, world.db.consent_changes) == ({}, [])
    [event] = world.events("consent.create")
    assert (event.outcome, event.reason, event.patient_id) == ("denied", "role_not_permitted", patient.id)
    assert "own_org" in str(event.details["facts"]).split("&")  # for `policy diff` to replay


async def test_another_organizations_officer_is_answered_as_if_the_patient_did_not_exist(
    world: FakeWorld,
) -> None:
    _, _, patient = await officer_and_patient(world)
    stranger = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)

    with pytest.raises(NotFound) as raised:
        await record_consent(world.services, stranger, consent_to(patient, stranger.organization_id))
    with pytest.raises(NotFound) as missing:
        await record_consent(world.services, stranger, consent_to(dataclasses.replace(patient, id=424242), 1))

    assert str(raised.value) == str(missing.value)
    assert world.db.consents == {}
    decision, seen, lookup = world.events("consent.create")
    assert (seen.event, seen.resource_type, seen.resource_id) == ("lookup", "patient", str(patient.id))
    # The client hears "not found"; the record keeps the real decision and reason.
    assert (decision.outcome, decision.reason, decision.details["answered"]) == (
        "denied",
        "other_organization",
        "not_found",
    )
    assert (lookup.event, lookup.reason) == ("lookup", "not_found")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"organization_id": 424242}, "organizationId"),
        ({"scope": frozenset()}, "scope"),
        ({"expires_at": START}, "expiresAt"),  # the moment it takes effect (the fake clock's start)
    ],
    ids=["unknown organization", "empty scope", "expiry not after effect"],
)
async def test_a_consent_that_cannot_hold_is_refused_by_field_and_not_stored(
    world: FakeWorld, fields: dict[str, object], field: str
) -> None:
    officer, _, patient = await officer_and_patient(world)

    with pytest.raises(InvalidInput) as raised:
        await record_consent(world.services, officer, consent_to(patient, world.organization().id, **fields))

    assert [e.field for e in raised.value.errors] == [field]
    assert (world.db.consents, world.db.consent_changes) == ({}, [])


async def test_a_consent_may_name_the_organizations_own_group_or_one_shared_with_it(
    world: FakeWorld,
) -> None:
    officer, _, patient = await officer_and_patient(world)
    partner = world.organization()
    own = await create_compliance_group(
        world.services, officer, CreateComplianceGroup("Own", None, [partner.id])
    )
    partner_officer = world.actor(Role.COMPLIANCE_OFFICER, partner.id)
    shared = await create_compliance_group(
        world.services, partner_officer, CreateComplianceGroup("Shared", None, [partner.id])
    )
    await share_compliance_group(
        world.services, partner_officer, ShareComplianceGroup(shared.id, officer.organization_id)
    )

    recorded = [
        await record_consent(
            world.services,
            officer,
            RecordConsent(
                patient.id, RecipientType.COMPLIANCE_GROUP, Purpose.TREATMENT, compliance_group_id=g.id
            ),
        )
        for g in (own, shared)
    ]

    assert [k.compliance_group_id for k in world.db.consents.values()] == [own.id, shared.id]
    assert [k.id for k in recorded] == list(world.db.consents)
    uses = world.events("compliance_group.use")
    assert [(e.outcome, e.resource_id) for e in uses] == [
        ("success", str(own.id)),
        ("success", str(shared.id)),
    ]
    assert world.services.consents.covering(patient.id, partner.id, world.clock()) is not None


async def test_a_group_neither_owned_nor_shared_is_answered_as_no_such_group(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    other = world.organization()
    theirs = await create_compliance_group(
        world.services,
        world.actor(Role.COMPLIANCE_OFFICER, other.id),
        CreateComplianceGroup("Theirs", None, [other.id]),
    )
    cmd = RecordConsent(
        patient.id, RecipientType.COMPLIANCE_GROUP, Purpose.TREATMENT, compliance_group_id=theirs.id
    )

    with pytest.raises(InvalidInput) as raised:
        await record_consent(world.services, officer, cmd)
    with pytest.raises(InvalidInput) as missing:
        await record_consent(world.services, officer, dataclasses.replace(cmd, compliance_group_id=424242))

    assert [(e.field, e.type) for e in raised.value.errors] == [("complianceGroupId", "not_found")]
    assert [(e.field, e.message) for e in raised.value.errors] == [
        (e.field, e.message) for e in missing.value.errors
    ]
    assert world.db.consents == {}
    [use] = world.events("compliance_group.use")
    assert (use.outcome, use.resource_id, use.patient_id) == ("denied", str(theirs.id), patient.id)


async def test_only_a_consent_with_write_scope_lets_an_outsider_change_the_record(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    reading = await record_consent(world.services, officer, consent_to(patient, partner))
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    change = UpdatePatient(patient.id, {"last_name": "Li"})

    with pytest.raises(Forbidden) as raised:
        await update_patient(world.services, outsider, change)
    assert "covered" in raised.value.decision.missing
    assert world.db.patients[patient.id] == patient

    writing = await record_consent(
        world.services,
        officer,
        consent_to(patient, partner, scope=frozenset({ConsentScope.READ, ConsentScope.WRITE})),
    )
    updated = await update_patient(world.services, outsider, change)

    assert updated.last_name == "Li"
    denied, allowed = world.events("patient.update")
    assert denied.details.get("consent_id") is None
    assert (allowed.outcome, allowed.details["consent_id"]) == ("success", writing.id)
    assert reading.id != writing.id


async def test_a_consent_for_payment_does_not_let_an_outsider_read_for_treatment(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner = world.organization().id
    for_care = await record_consent(world.services, officer, consent_to(patient, partner))
    outsider = await outsider_on_the_team(world, nurse, patient, partner)
    await record_consent(world.services, officer, consent_to(patient, partner, purpose=Purpose.PAYMENT))

    await get_patient(world.services, outsider, patient.id)
    await revoke_consent(world.services, officer, RevokeConsent(for_care.id, "Patient asked."))
    with pytest.raises(Forbidden):
        await get_patient(world.services, outsider, patient.id)

    read, refused = world.events("patient.read")
    assert (read.outcome, read.purpose, read.details["consent_id"]) == ("success", "treatment", for_care.id)
    assert (refused.outcome, refused.details.get("consent_id")) == ("denied", None)


async def test_the_care_team_and_the_officer_list_the_patients_consents(world: FakeWorld) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    first = await record_consent(world.services, officer, consent_to(patient, world.organization().id))
    world.clock.advance(minutes=1)
    second = await record_consent(world.services, officer, consent_to(patient, world.organization().id))

    assert await list_consents(world.services, officer, patient.id) == [first, second]
    assert await list_consents(world.services, nurse, patient.id) == [first, second]
    assert [e.outcome for e in world.events("consent.list")] == ["success", "success"]


async def test_staff_off_the_care_team_may_not_list_consents_and_strangers_learn_nothing(
    world: FakeWorld,
) -> None:
    officer, _, patient = await officer_and_patient(world)
    await record_consent(world.services, officer, consent_to(patient, world.organization().id))
    colleague = world.actor(Role.PEER_SUPPORT, officer.organization_id)
    stranger = world.actor(Role.COMPLIANCE_OFFICER, world.organization().id)
    auditor = world.actor(Role.AUDITOR, officer.organization_id)

    with pytest.raises(Forbidden) as off_team:
        await list_consents(world.services, colleague, patient.id)
    with pytest.raises(NotFound):
        await list_consents(world.services, stranger, patient.id)
    with pytest.raises(Forbidden) as role:
        await list_consents(world.services, auditor, patient.id)

    assert "care_team" in off_team.value.decision.missing
    assert role.value.decision.reason == "role_not_permitted"
    assert [(e.actor_id, e.outcome) for e in world.events("consent.list")] == [
        (colleague.user_id, "denied"),
        (stranger.user_id, "denied"),
        (stranger.user_id, "failure"),  # the lookup a missing patient leaves, which it sees instead
        (auditor.user_id, "denied"),
    ]


async def test_a_consent_with_an_expiry_stops_covering_when_it_expires(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    partner = world.organization().id
    consent = await record_consent(
        world.services, officer, consent_to(patient, partner, expires_at=world.clock() + timedelta(days=1))
    )

    assert consent.expires_at == world.clock() + timedelta(days=1)
    assert world.services.consents.covering(patient.id, partner, world.clock()) is not None
    world.clock.advance(days=1)
    assert world.services.consents.covering(patient.id, partner, world.clock()) is None


# --- 42 CFR Part 2 consents ----------------------------------------------------------------------------

PART2 = Part2Elements(
    discloser="Riverside Recovery Program",
    information="Diagnosis and medications",
    signed_by="The patient",
    signed_on=START.date(),
)


async def test_a_part2_consent_keeps_its_elements_and_its_decision_says_part2(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    partner = world.organization().id
    cmd = RecordConsent(
        patient.id,
        RecipientType.ORGANIZATION,
        Purpose.TREATMENT,
        organization_id=partner,
        expires_at=START + timedelta(days=30),
        part2=PART2,
    )

    consent = await record_consent(world.services, officer, cmd)

    assert world.db.consents[consent.id].part2 == PART2
    [decision] = world.events("consent.create")
    assert decision.details["part2"] is True


@pytest.mark.parametrize(
    ("elements", "expires", "field"),
    [
        (PART2, False, "part2.expiryEvent"),
        (dataclasses.replace(PART2, signed_on=START.date() + timedelta(days=1)), True, "part2.signedOn"),
        (dataclasses.replace(PART2, revocation_right_stated=False), True, "part2.revocationRightStated"),
    ],
    ids=["no-expiry-date-or-event", "signed-tomorrow", "right-to-revoke-not-stated"],
)
async def test_a_part2_consent_lacking_an_element_is_refused_and_not_stored(
    world: FakeWorld, elements: Part2Elements, expires: bool, field: str
) -> None:
    officer, _, patient = await officer_and_patient(world)
    cmd = RecordConsent(
        patient.id,
        RecipientType.ORGANIZATION,
        Purpose.TREATMENT,
        organization_id=world.organization().id,
        expires_at=START + timedelta(days=30) if expires else None,
        part2=elements,
    )

    with pytest.raises(InvalidInput) as refused:
        await record_consent(world.services, officer, cmd)

    assert [e.field for e in refused.value.errors] == [field]
    assert world.db.consents == {}


async def test_a_part2_consent_signed_today_where_the_clinic_is_ahead_of_utc_is_accepted(
    world: FakeWorld,
) -> None:
    """At 20:00 UTC it is already tomorrow in Auckland (UTC+13): a consent signed there this
    morning carries tomorrow's UTC date and is not signed in the future. Two days ahead is."""
    world.clock.advance(hours=11)  # START is 09:00 UTC
    officer, _, patient = await officer_and_patient(world)
    tomorrow = dataclasses.replace(PART2, signed_on=START.date() + timedelta(days=1))
    cmd = RecordConsent(
        patient.id,
        RecipientType.ORGANIZATION,
        Purpose.TREATMENT,
        organization_id=world.organization().id,
        expires_at=START + timedelta(days=30),
        part2=tomorrow,
    )

    consent = await record_consent(world.services, officer, cmd)
    assert world.db.consents[consent.id].part2 == tomorrow

    later = dataclasses.replace(
        cmd, part2=dataclasses.replace(PART2, signed_on=START.date() + timedelta(days=2))
    )
    with pytest.raises(InvalidInput) as refused:
        await record_consent(world.services, officer, later)
    assert [e.field for e in refused.value.errors] == ["part2.signedOn"]


async def test_an_expiry_event_stands_in_for_an_expiry_date(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    elements = dataclasses.replace(PART2, expiry_event="End of treatment")
    cmd = RecordConsent(
        patient.id,
        RecipientType.ORGANIZATION,
        Purpose.TREATMENT,
        organization_id=world.organization().id,
        part2=elements,
    )

    consent = await record_consent(world.services, officer, cmd)

    assert (consent.expires_at, consent.part2) == (None, elements)


async def test_a_part2_patients_consent_must_be_a_part2_consent(world: FakeWorld) -> None:
    officer, _, patient = await officer_and_patient(world)
    world.db.patients[patient.id] = dataclasses.replace(patient, part2=True)
    partner = world.organization().id
    plain = RecordConsent(patient.id, RecipientType.ORGANIZATION, Purpose.TREATMENT, organization_id=partner)

    with pytest.raises(InvalidInput) as refused:
        await record_consent(world.services, officer, plain)
    consent = await record_consent(
        world.services,
        officer,
        dataclasses.replace(plain, expires_at=START + timedelta(days=30), part2=PART2),
    )

    assert [e.field for e in refused.value.errors] == ["part2"]
    assert list(world.db.consents) == [consent.id]
