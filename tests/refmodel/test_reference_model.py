"""Every decision of random worlds checked against the reference model (tests/refmodel/model.py).

One app for the whole test, fresh data per example (new organizations, people, patients and phone
numbers each time). CI runs ``CAREMSG_REFMODEL_EXAMPLES`` (default 40) scenarios of 3 to 20
actions each; a long run raises it:

    CAREMSG_REFMODEL_EXAMPLES=500 ./run.sh test tests/refmodel -q -x

A disagreement fails with the world and the actions up to it, shrunk by Hypothesis to a minimal one.
That the model would catch each decision defect of issue 9 if it came back is shown by
tests/refmodel/test_defects_put_back.py (each defect put back in-process, its showcase run).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from handlers.keys import services_key
from tests.refmodel import model as m
from tests.refmodel.driver import TALLIES, Disagreement, Tally, run_scenario
from tests.refmodel.known_defects import DEFECTS, EXEMPT, exempted
from tests.refmodel.scenarios import Scenario, WorldSpec, scenarios
from tests.refmodel.showcases import (
    ORG0_ADMIN,
    ORG0_CLINICIAN,
    ORG0_OFFICER,
    ORG0_REGISTRAR,
    ORG1_CLINICIAN,
    ORG1_OFFICER,
    SHOWCASES,
    SMS_AND_MESSAGE,
    TWO_ORGS,
)

EXAMPLES = int(os.environ.get("CAREMSG_REFMODEL_EXAMPLES", "40"))


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    return TALLIES.setdefault(request.node.name, Tally())


@hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("CAREMSG_REFMODEL_EXAMPLES") is None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    print_blob=True,
)
@given(scenario=scenarios())
async def test_every_decision_matches_the_reference_model(
    client: TestClient[Any, Any], db: asyncpg.Connection, tally: Tally, scenario: Scenario
) -> None:
    services = client.server.app[services_key]
    await run_scenario(client, db, services, scenario, exempted(), tally)


# --- each exempted defect, shown in the smallest world that has it -----------------------------


@pytest.mark.parametrize(
    "defect",
    [
        pytest.param(
            d,
            id=f"defect-{d}",
            marks=[
                pytest.mark.xfail(strict=True, raises=Disagreement, reason=f"known defect {d}: {DEFECTS[d]}")
            ]
            if d in EXEMPT
            else [],
        )
        for d in sorted(SHOWCASES, key=int)
    ],
)
async def test_each_exempted_defect_is_still_there(
    client: TestClient[Any, Any], db: asyncpg.Connection, defect: str
) -> None:
    """Strict xfail while a defect is exempted: when its fix lands this passes, which fails the run
    until the id leaves EXEMPT (the random test then fails on any instance of it again). Once fixed,
    it stays as a regression case (other defects still exempted are excused on the way)."""
    services = client.server.app[services_key]
    await run_scenario(client, db, services, SHOWCASES[defect], EXEMPT - {defect}, Tally())


# --- worked cases of the README, decided by the model and the service alike ------------------------

READ = frozenset({"read"})
CASES: dict[str, Scenario] = {
    "an organization consent admits a number its contact directory lists, brought in by its staff": Scenario(
        WorldSpec(2, (0,), ((0, ORG1_CLINICIAN),), (), frozenset(), (), frozenset({(1, 0)})),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.CreateConversation(
                "conversation.create", ORG1_CLINICIAN, 0, (ORG0_REGISTRAR,), (m.NewExternal(0, 1),)
            ),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
        ),
    ),
    "the patient's organization and the clinician's each review an emergency session on their own": Scenario(
        TWO_ORGS,
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", READ, "active"
            ),
            m.PatientAction("break_glass.open", ORG1_CLINICIAN, 0),
            m.ReviewSession("break_glass.review", ORG1_OFFICER, 0),  # the clinician's, first
            m.ReviewSession("break_glass.review", ORG0_OFFICER, 0),  # the patient's: still its own to do
            m.ReviewSession("break_glass.review", ORG1_OFFICER, 0),  # once per organization
            m.ReviewSession("break_glass.review", ORG0_OFFICER, None),
        ),
    ),
    "a partner's care-team member lists only the consents disclosing to its organization": Scenario(
        WorldSpec(2, (0,), ((0, ORG1_CLINICIAN),), (), frozenset(), ()),
        (
            m.RecordConsent("consent.create", ORG0_OFFICER, 0, "organization", 1, "payment", READ, "active"),
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "external", 0, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.PatientAction("consent.list", ORG1_CLINICIAN, 0),
            m.PatientAction("consent.list", ORG0_REGISTRAR, 0),
        ),
    ),
    "another organization's directory is not read: a number it lists is refused like any other": Scenario(
        WorldSpec(2, (0,), (), (), frozenset(), (), frozenset({(1, 0)})),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), (m.NewExternal(0, 1),)),
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), (m.NewExternal(1, 1),)),
        ),
    ),
    "naming an organization for a number it does not list admits nobody": Scenario(
        TWO_ORGS,
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), (m.NewExternal(0, 1),)),
        ),
    ),
    "a consent naming the number outranks the organization's, and its revocation hands over": Scenario(
        WorldSpec(2, (0,), ((0, ORG1_CLINICIAN),), (), frozenset(), (), frozenset({(1, 0)})),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "external",
                0,
                "care_coordination",
                SMS_AND_MESSAGE,
                "active",
            ),
            m.CreateConversation(
                "conversation.create", ORG1_CLINICIAN, 0, (ORG0_REGISTRAR,), (m.NewExternal(0, 1),)
            ),
            m.RevokeConsent("consent.revoke", ORG0_OFFICER, 1),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
        ),
    ),
    "a consent without expiry outranks one expiring tomorrow, whichever was recorded first": Scenario(
        TWO_ORGS,
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "external", 0, "treatment", SMS_AND_MESSAGE, "active", 1
            ),
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "external", 0, "treatment", SMS_AND_MESSAGE, "active"
            ),
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), (m.NewExternal(0, None),)),
        ),
    ),
    "another organization's group can be named in a consent once its owner shares it": Scenario(
        WorldSpec(2, (0,), (), ((1, frozenset({1})),), frozenset(), ()),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "compliance_group", 0, "treatment", READ, "active"
            ),
            m.Action("compliance_group.list", ORG0_OFFICER),
            m.ShareGroup("compliance_group.share", ORG0_OFFICER, 0, 0),
            m.ShareGroup("compliance_group.share", ORG1_OFFICER, 0, 0),
            m.Action("compliance_group.list", ORG0_OFFICER),
            m.ShareGroup("compliance_group.share", ORG0_OFFICER, 0, 0),
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "compliance_group", 0, "treatment", READ, "active"
            ),
        ),
    ),
    "a read mark names a message of its conversation and only moves forward": Scenario(
        TWO_ORGS,
        (
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), ()),
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), ()),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 1),
            # Odd message references are taken as they are (1: the second message sent; 3: the
            # first; 5: the third, which is the other conversation's); see scenarios.resolve.
            m.MarkRead("conversation.read", ORG0_REGISTRAR, 0, 1),
            m.MarkRead("conversation.read", ORG0_REGISTRAR, 0, 3),  # back: stays at the second
            m.MarkRead("conversation.read", ORG0_REGISTRAR, 0, 5),  # the other conversation's: 422
            m.MarkRead("conversation.read", ORG0_REGISTRAR, 0, None),  # nobody's: 422
            m.MarkRead("conversation.read", ORG1_CLINICIAN, 0, 1),  # no relation: as no conversation
            m.MarkRead("conversation.read", ORG0_OFFICER, 0, 1),  # a role that never reads
            m.MarkRead("conversation.read", ORG0_REGISTRAR, 1, 5),
        ),
    ),
    "a read-only consent lets a partner read but not change the record": Scenario(
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
            m.PatientAction("patient.read", ORG1_CLINICIAN, 0),
            m.UpdatePatient("patient.update", ORG1_CLINICIAN, 0, "low"),
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "organization",
                1,
                "treatment",
                frozenset({"write"}),
                "active",
            ),
            m.UpdatePatient("patient.update", ORG1_CLINICIAN, 0, "low"),
            m.PatientAction("patient.read", ORG1_CLINICIAN, 0, purpose_of_use="payment"),
        ),
    ),
    "a patient is marked Part 2 only once no consent without the Part 2 elements is in force": Scenario(
        TWO_ORGS,
        (
            *(
                m.RecordConsent(
                    "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", frozenset({"read"}), t
                )
                for t in ("active", "pending", "expired")  # consents 0, 1, 2
            ),
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "low", True),  # 409: 0 and 1
            m.RevokeConsent("consent.revoke", ORG0_OFFICER, 0),
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "low", True),  # 409: 1 is pending
            m.RevokeConsent("consent.revoke", ORG0_OFFICER, 1),
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "low", True),  # the expired one: no matter
            m.RecordConsent(
                "consent.create",
                ORG0_OFFICER,
                0,
                "organization",
                1,
                "treatment",
                frozenset({"read"}),
                "active",
            ),  # 422: a Part 2 patient's consents carry the elements
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "low", False),
        ),
    ),
    # Issue 13: what becomes of a message once sent. Message references resolve as
    # scenarios.resolve says: an even one prefers a message the actor sent (for the legal record, one
    # recalled), an odd one is taken modulo the messages sent so far.
    "a message is recalled by its sender within the window, by an officer at any time": Scenario(
        TWO_ORGS,
        (
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (ORG0_CLINICIAN,), ()),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),  # message 0
            m.ConversationAction("message.send", ORG0_CLINICIAN, 0),  # message 1
            m.RecallMessage("message.recall", ORG0_REGISTRAR, 1),  # not theirs
            m.RecallMessage("message.recall", ORG0_REGISTRAR, 0, m.INSIDE),  # a minute to spare
            m.RecallMessage("message.recall", ORG0_REGISTRAR, 0),  # recalled already: 409
            m.RecallMessage("message.recall", ORG0_CLINICIAN, 0, m.PAST),  # too late
            m.RecallMessage("message.recall", ORG1_OFFICER, 1),  # another organization's: as none
            m.RecallMessage("message.recall", ORG0_OFFICER, 1),  # the patient's officer, any time
            m.MessageAction("message.read_recalled", ORG0_REGISTRAR, 1),  # staff never read it
            m.MessageAction("message.read_recalled", ORG1_OFFICER, 1),
            m.MessageAction("message.read_recalled", ORG0_OFFICER, 0),
            m.MessageAction("message.read_recalled", ORG0_OFFICER, None),
        ),
    ),
    "a correction is its sender's, once per message; a file goes as a message of its own": Scenario(
        TWO_ORGS,
        (
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (ORG0_CLINICIAN,), ()),
            m.ConversationAction("message.send", ORG0_REGISTRAR, 0),  # message 0
            m.MessageAction("message.correct", ORG0_CLINICIAN, 1),  # not theirs
            m.MessageAction("message.correct", ORG0_REGISTRAR, 0),  # message 1 corrects 0
            m.MessageAction("message.correct", ORG0_REGISTRAR, 1),  # a correction corrected: 2
            m.MessageAction("message.correct", ORG0_REGISTRAR, 3),  # 0 again: 409
            m.ConversationAction("message.attach", ORG0_CLINICIAN, 0),
            m.ConversationAction("message.attach", ORG1_CLINICIAN, 1),  # no relation: as none
            m.ConversationAction("message.attach", ORG0_OFFICER, 1),  # a role that never sends
            m.MarkRead("conversation.read", ORG0_CLINICIAN, 0, 1),
            # Downloads: references prefer a message that carries a file (3, the attached one).
            m.DownloadAttachment("conversation.read", ORG0_REGISTRAR, 0),
            m.DownloadAttachment("conversation.read", ORG0_REGISTRAR, 1),  # message 1: no file
            m.DownloadAttachment("conversation.read", ORG1_CLINICIAN, 0),  # no relation: as none
            m.RecallMessage("message.recall", ORG0_OFFICER, 3),
            m.DownloadAttachment("conversation.read", ORG0_REGISTRAR, 0),  # recalled: its file too
        ),
    ),
    "a Part 2 patient's consents are Part 2 ones, each ending on a date or an event": Scenario(
        WorldSpec(2, (0,), (), (), frozenset(), (), frozenset(), frozenset({0})),
        (
            m.RecordConsent(
                "consent.create", ORG0_OFFICER, 0, "organization", 1, "treatment", READ, "active"
            ),
            *(
                m.RecordConsent(
                    "consent.create",
                    ORG0_OFFICER,
                    0,
                    "organization",
                    1,
                    "treatment",
                    READ,
                    "active",
                    days,
                    part2,
                )
                for days, part2 in ((None, "no_event"), (30, "no_event"), (None, "event"))
            ),
        ),
    ),
    "the Part 2 mark comes off by the patient's organization's compliance officer alone": Scenario(
        WorldSpec(2, (0,), (), (), frozenset(), (), frozenset(), frozenset({0})),
        (
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "high", False),  # with a change: 403
            m.PatientAction("patient.unmark_part2", ORG0_REGISTRAR, 0),  # alone: not the care team's
            m.PatientAction("patient.unmark_part2", ORG1_OFFICER, 0),  # another organization: as none
            m.PatientAction("patient.unmark_part2", ORG0_ADMIN, 0),
            m.PatientAction("patient.read", ORG0_REGISTRAR, 0),
            m.PatientAction("patient.unmark_part2", ORG0_OFFICER, 0),
            m.UpdatePatient("patient.update", ORG0_REGISTRAR, 0, "low", False),  # not marked now: 200
        ),
    ),
    "legal holds are placed, lifted once and listed by their organization's officers": Scenario(
        WorldSpec(2, (0, 1), (), (), frozenset(), ()),
        (
            m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (), ()),
            m.PlaceHold("legal_hold.place", ORG0_OFFICER, 0),
            m.PlaceHold("legal_hold.place", ORG1_OFFICER, 0),  # another organization's patient: as none
            m.PlaceHold("legal_hold.place", ORG0_OFFICER, None, 0),  # on the conversation
            m.PlaceHold("legal_hold.place", ORG0_ADMIN, 0),  # a role that never holds
            m.PlaceHold("legal_hold.place", ORG1_OFFICER, 1),
            m.PlaceHold("legal_hold.place", ORG1_OFFICER, None),  # nobody's
            m.Action("legal_hold.list", ORG0_OFFICER),
            m.LiftHold("legal_hold.lift", ORG1_OFFICER, 0),  # as none
            m.LiftHold("legal_hold.lift", ORG0_OFFICER, 0),
            m.LiftHold("legal_hold.lift", ORG0_OFFICER, 0),  # lifted already: 409
            m.LiftHold("legal_hold.lift", ORG0_OFFICER, None),
            m.Action("legal_hold.list", ORG1_OFFICER),
            m.Action("legal_hold.list", ORG0_ADMIN),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_worked_case_agrees_with_the_model(
    client: TestClient[Any, Any], db: asyncpg.Connection, case: str
) -> None:
    services = client.server.app[services_key]
    tally = TALLIES.setdefault("worked cases", Tally())
    await run_scenario(client, db, services, CASES[case], exempted(), tally)


def test_every_workflow_of_the_policy_is_driven_by_the_model() -> None:
    """A workflow added to policies/workflows.toml fails this until the model decides it (directly,
    or within another action: DECIDED_WITHIN)."""
    declared = tomllib.loads((Path(__file__).parents[2] / "policies" / "workflows.toml").read_text())
    assert set(declared["workflows"]) == set(m.WORKFLOWS) | m.DECIDED_WITHIN
