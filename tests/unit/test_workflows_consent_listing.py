"""Who sees which of a patient's consents (``consent.list``), on fakes: the patient's organization
sees them all; another organization's care-team member, covered by a consent, sees only those that
disclose the patient to their own organization (tests/api/test_consents.py covers it over HTTP)."""

from __future__ import annotations

from engine.model import Purpose, RecipientType
from engine.workflows.consents import RecordConsent, list_consents, record_consent
from engine.workflows.organizations import CreateComplianceGroup, create_compliance_group
from tests.support.fakes import FakeWorld
from tests.support.worlds import consent_to, officer_and_patient, outsider_on_the_team


async def test_a_partner_sees_only_the_consents_naming_its_organization_or_its_groups(
    world: FakeWorld,
) -> None:
    officer, nurse, patient = await officer_and_patient(world)
    partner, other = world.organization().id, world.organization().id
    theirs = await record_consent(
        world.services,
        officer,
        consent_to(patient, partner, purpose=Purpose.PAYMENT, scope=frozenset({"read"})),
    )
    others = await record_consent(world.services, officer, consent_to(patient, other))
    group = await create_compliance_group(
        world.services, officer, CreateComplianceGroup("Network", None, [partner])
    )
    through_group = await record_consent(
        world.services,
        officer,
        RecordConsent(
            patient.id, RecipientType.COMPLIANCE_GROUP, Purpose.TREATMENT, compliance_group_id=group.id
        ),
    )
    outsider = await outsider_on_the_team(world, nurse, patient, partner)

    shown = await list_consents(world.services, outsider, patient.id)
    everything = await list_consents(world.services, nurse, patient.id)

    assert shown == [theirs, through_group]
    assert everything == [theirs, others, through_group]
    partners, own = world.events("consent.list")
    assert (partners.outcome, partners.details["shown"]) == ("success", "disclosed_to_own_organization")
    assert own.details["shown"] == "all"
