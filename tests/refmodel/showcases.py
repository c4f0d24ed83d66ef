"""The smallest worlds that show each decision defect of issue 9 (by its number there), one scenario
each: the model and the service agree on them now, and each disagrees when its defect is put back
(tests/refmodel/test_defects_put_back.py). People are named by their index in the world: in roster
order (scenarios.ROSTER) per organization.
"""

from __future__ import annotations

from tests.refmodel import model as m
from tests.refmodel.scenarios import Scenario, WorldSpec

ORG0_OFFICER, ORG0_REGISTRAR, ORG1_PEER, ORG1_CLINICIAN = 4, 1, 6, 7
ORG1_REGISTRAR, ORG1_OFFICER = 7, 10
ORG0_CLINICIAN, ORG0_ADMIN = 2, 3
SMS_AND_MESSAGE = frozenset({"sms", "message"})
TWO_ORGS = WorldSpec(2, (0,), (), (), frozenset(), ())

SHOWCASES: dict[str, Scenario] = {
    "1": Scenario(
        # Organization 1's contact directory lists the number, and its clinician on the patient's care
        # team brings it in; but one consent naming organization 1 is for payment and discloses the
        # record only, the other (which lets the clinician converse) has no sms: neither admits the
        # number to a conversation.
        WorldSpec(2, (0,), ((0, ORG1_CLINICIAN),), (), frozenset(), (), frozenset({(1, 0)})),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "payment", frozenset({"read"}), "active"
            ),
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "organization",
                1,
                "treatment",
                frozenset({"read", "message"}),
                "active",
            ),
            m.CreateConversation("conversation.create", ORG1_CLINICIAN, 0, (), (m.NewExternal(0, 1),)),
        ),
    ),
    "3": Scenario(
        # A member of a conversation opens emergency access to its patient: what they then read in
        # it and send into it is flagged break_glass in the audit.
        TWO_ORGS,
        (
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), ()),
            m.PatientAction("break_glass.open", ORG0_REGISTRAR, 0),
            m.ConversationAction("conversation.read", ORG0_REGISTRAR, 0),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
        ),
    ),
    "2": Scenario(
        WorldSpec(2, (0,), (), ((1, frozenset({1})),), frozenset(), ()),
        (
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "compliance_group",
                0,
                "treatment",
                frozenset({"read"}),
                "active",
            ),
        ),
    ),
    "8": Scenario(
        TWO_ORGS,
        (
            # A consent for payment: the patient is known to org1, but not one it may treat.
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "payment", frozenset({"read"}), "active"
            ),
            m.PatientAction("break_glass.open", ORG1_PEER, 0),
        ),
    ),
    "9": Scenario(
        WorldSpec(2, (0,), ((0, ORG1_CLINICIAN),), (), frozenset(), ()),
        (
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "organization",
                1,
                "treatment",
                frozenset({"read"}),
                "active",
            ),
            m.UpdatePatient("patient.update", ORG1_CLINICIAN, 0, "low"),
        ),
    ),
    "10": Scenario(
        WorldSpec(2, (0, 1), (), (), frozenset(), ()),
        (
            *(
                step
                for patient, officer, registrar in (
                    (0, ORG0_OFFICER, ORG0_REGISTRAR),
                    (1, ORG1_OFFICER, ORG1_REGISTRAR),
                )
                for step in (
                    m.RecordConsent(
                        "consent.create",
                        officer,
                        patient,
                        "external",
                        0,
                        "treatment",
                        SMS_AND_MESSAGE,
                        "active",
                    ),
                    m.CreateConversation(
                        "conversation.create", registrar, patient, (), (m.NewExternal(0, None),)
                    ),
                )
            ),
            # Organization B texts the number last; the reply names neither conversation.
            m.ConversationAction("message.send", ORG1_REGISTRAR, 1),
            m.SmsReply("sms.reply", m.NOBODY, 0),
        ),
    ),
    "11": Scenario(TWO_ORGS, (m.Action("organization.list", ORG1_PEER),)),
    "12": Scenario(TWO_ORGS, (m.PatientAction("patient.read", ORG1_PEER, 0),)),
}
