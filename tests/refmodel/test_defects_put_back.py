"""Each decision defect of issue 9 (1, 2, 3, 8, 9, 10, 11, 12), put back into the running service, is
caught by the reference model and attributed to that defect; so are defects put into issue 13's
workflows (a member who did not send a message recalls it, the recall window never ends, a file is
attached under message.send's decision, another organization's legal hold is lifted), each on the
action it breaks.

For each defect a *mutant* puts it back in-process, by patching the one narrow place its fix lives
(the fact builder's consent choice, the compliance-group ownership fact, the emergency-session fact,
the ``treatable`` fact, the reply routing, the listing filter, the concealment). The defect's
showcase (tests/refmodel/showcases.py) runs twice on the same app: first as shipped, where it must
agree with the model (else the case proves nothing), then with the mutant in place, where the model
must report a disagreement that tests/refmodel/known_defects.py attributes to that very defect. If the
model stopped checking what the defect breaks, the second run would pass and the case fails.

    ./run.sh test tests/refmodel/test_defects_put_back.py -q
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

import engine.consent_index
import engine.facts
import engine.services
import engine.workflows.attachments
import engine.workflows.consents
import engine.workflows.legal_holds
import engine.workflows.messaging
import engine.workflows.organizations
import engine.workflows.recalls
from engine.decisions import Fact
from engine.facts import ConsentCandidate, ConsentChoice, ConsentNeed, Facts
from engine.policy import WorkflowSpec
from engine.ports import ReplyRoute
from handlers.keys import services_key
from tests.refmodel import model as m
from tests.refmodel.driver import Disagreement, Tally, run_scenario
from tests.refmodel.known_defects import DEFECTS
from tests.refmodel.scenarios import Scenario
from tests.refmodel.showcases import SHOWCASES, TWO_ORGS

Mutant = Callable[[pytest.MonkeyPatch], None]


def _choosing(monkeypatch: pytest.MonkeyPatch, loosen: Callable[[ConsentNeed], ConsentNeed]) -> None:
    """Make the fact builder's consent choice ask less of a consent (everywhere it is imported)."""
    original = engine.facts.choose_consent

    def choose(
        candidates: Iterable[ConsentCandidate], need: ConsentNeed, at_ms: int, *, exclude: int | None = None
    ) -> ConsentChoice:
        return original(candidates, loosen(need), at_ms, exclude=exclude)

    monkeypatch.setattr(engine.facts, "choose_consent", choose)
    monkeypatch.setattr(engine.consent_index, "choose_consent", choose)


def defect_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """An external participant's consent counts whatever its scope and purpose."""
    _choosing(monkeypatch, lambda need: ConsentNeed() if "sms" in need.scopes else need)


def defect_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any compliance group counts as the consenting organization's own."""
    monkeypatch.setattr(
        engine.workflows.consents, "group_facts", lambda group, org: frozenset({Fact.OWN_ORG})
    )


def _relation_facts(monkeypatch: pytest.MonkeyPatch, change: Callable[[dict[str, Any]], Facts]) -> None:
    monkeypatch.setattr(engine.services, "relation_facts", lambda **kwargs: change(kwargs))


def defect_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """``break_glass`` is not computed on the conversation paths (reading one, sending into it)."""
    original = engine.facts.relation_facts

    def change(kwargs: dict[str, Any]) -> Facts:
        if Fact.MEMBER in kwargs["wanted"]:
            kwargs = {**kwargs, "break_glass_session_id": None}
        return original(**kwargs)

    _relation_facts(monkeypatch, change)


def defect_8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every patient is ``treatable``: break-the-glass is open to anyone's patients."""
    original = engine.facts.relation_facts

    def change(kwargs: dict[str, Any]) -> Facts:
        built = original(**kwargs)
        if Fact.TREATABLE in kwargs["wanted"]:
            built.facts.add(Fact.TREATABLE)
        return built

    _relation_facts(monkeypatch, change)


def defect_9(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consent counts for a change whether or not its scope includes ``write``."""
    _choosing(monkeypatch, lambda need: replace(need, scopes=need.scopes - {"write"}))


def defect_10(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply without a code goes where the number was texted last, never held."""
    original = engine.workflows.messaging._reply_destination

    def destination(
        routes: Sequence[ReplyRoute], code: int | None
    ) -> tuple[ReplyRoute | None, list[ReplyRoute]]:
        return (routes[0], []) if code is None else original(routes, code)

    monkeypatch.setattr(engine.workflows.messaging, "_reply_destination", destination)


def defect_11(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listings show every slice (every organization, every compliance group) to anyone."""
    monkeypatch.setattr(
        engine.workflows.organizations, "visible_slices", lambda guard, wf, slices: set(slices)
    )


def defect_12(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal about a record the caller has no relation to answers 403 with its reason."""
    monkeypatch.setattr(engine.services.Decider, "_concealed", lambda self, *args: None)


MUTANTS: dict[str, Mutant] = {
    "1": defect_1,
    "2": defect_2,
    "3": defect_3,
    "8": defect_8,
    "9": defect_9,
    "10": defect_10,
    "11": defect_11,
    "12": defect_12,
}


def test_every_decision_defect_of_the_issue_has_a_mutant_and_a_showcase() -> None:
    assert sorted(MUTANTS, key=int) == ["1", "2", "3", "8", "9", "10", "11", "12"]
    assert set(MUTANTS) <= set(SHOWCASES) & set(DEFECTS)


@pytest.mark.parametrize("defect", sorted(MUTANTS, key=int), ids=lambda d: f"defect-{d}")
async def test_a_decision_defect_put_back_is_caught_by_the_reference_model(
    client: TestClient[Any, Any], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    services = client.server.app[services_key]
    scenario = SHOWCASES[defect]
    await run_scenario(client, db, services, scenario, frozenset(), Tally())  # as shipped: agrees

    MUTANTS[defect](monkeypatch)
    tally = Tally()
    with pytest.raises(Disagreement, match=rf"looks like known defect (\d+\+)?{re.escape(defect)}\b"):
        await run_scenario(client, db, services, scenario, frozenset(), tally)
    # Excused as that defect, the same scenario runs to its end: nothing else disagrees.
    tally = Tally()
    await run_scenario(client, db, services, scenario, frozenset({defect}), tally)
    assert tally.known.get(defect, 0) >= 1, tally.known


# --- defects in issue 13's workflows (recall, legal holds), put back the same way ---------------------

ORG0_OFFICER, ORG0_REGISTRAR, ORG0_CLINICIAN, ORG1_OFFICER = 4, 1, 2, 10
ONE_MESSAGE = (
    m.CreateConversation("conversation.create", ORG0_REGISTRAR, 0, (ORG0_CLINICIAN,), ()),
    m.ConversationAction("message.send", ORG0_REGISTRAR, 0),
)


def _message_facts(monkeypatch: pytest.MonkeyPatch, *added: str) -> None:
    """The message's own facts (``sender``, ``recall_window``) hold whether or not they do."""
    original = engine.workflows.recalls.message_facts

    def facts(spec: WorkflowSpec | None, **kwargs: Any) -> frozenset[str]:
        wanted = spec.facts if spec is not None else frozenset()
        return original(spec, **kwargs) | (frozenset(added) & wanted)

    monkeypatch.setattr(engine.workflows.recalls, "message_facts", facts)


def recall_by_anyone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that lets a member who did not send a message recall it: ``sender`` always holds."""
    _message_facts(monkeypatch, Fact.SENDER)


def recall_window_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender recalls at any time: ``recall_window`` always holds."""
    _message_facts(monkeypatch, Fact.RECALL_WINDOW)


def hold_lifted_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """A legal hold is lifted without a decision: any compliance officer, of any organization, lifts
    another organization's hold (placing one is still decided)."""
    original = engine.workflows.legal_holds._require

    async def require(
        guard: Any, workflow: str, patient_id: int, kind: str, record_id: int, **details: int
    ) -> int:
        if workflow != engine.workflows.legal_holds.LIFT:
            return await original(guard, workflow, patient_id, kind, record_id, **details)
        patient = await guard.uow.patients.get(patient_id)
        return int(patient.organization_id)

    async def any_hold(guard: Any, actor: Any, hold_id: int) -> Any:
        return await guard.uow.legal_holds.get(hold_id)

    monkeypatch.setattr(engine.workflows.legal_holds, "_require", require)
    monkeypatch.setattr(engine.workflows.legal_holds, "_own_hold", any_hold)


def attach_decided_as_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attaching a file is decided as sending a message, not as the workflow of its own that the
    policy may rule apart (``message.attach``)."""
    monkeypatch.setattr(engine.workflows.attachments, "ATTACH", "message.send")


#: Each mutant, its scenario (agreeing with the model as shipped), and the disagreement it must cause.
ISSUE13: dict[str, tuple[Mutant, Scenario, str]] = {
    "recall-by-a-member-who-did-not-send": (
        recall_by_anyone,
        # The clinician of the conversation recalls the registrar's message (reference 1: message 0).
        Scenario(TWO_ORGS, (*ONE_MESSAGE, m.RecallMessage("message.recall", ORG0_CLINICIAN, 1))),
        "status 200, model says 403",
    ),
    "recall-window-never-ends": (
        recall_window_never_ends,
        Scenario(TWO_ORGS, (*ONE_MESSAGE, m.RecallMessage("message.recall", ORG0_REGISTRAR, 0, m.PAST))),
        "status 200, model says 403",
    ),
    "attach-decided-as-send": (
        attach_decided_as_send,
        Scenario(TWO_ORGS, (*ONE_MESSAGE, m.ConversationAction("message.attach", ORG0_REGISTRAR, 0))),
        "audit: 0 message.attach decisions, model expects 1",
    ),
    "another-organizations-hold-lifted": (
        hold_lifted_undecided,
        Scenario(
            TWO_ORGS,
            (
                m.PlaceHold("legal_hold.place", ORG0_OFFICER, 0),
                m.LiftHold("legal_hold.lift", ORG1_OFFICER, 0),
            ),
        ),
        "status 200, model says 404",
    ),
}


@pytest.mark.parametrize("mutant", sorted(ISSUE13))
async def test_a_defect_in_an_issue13_workflow_put_back_is_caught_by_the_reference_model(
    client: TestClient[Any, Any], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    services = client.server.app[services_key]
    put_back, scenario, disagreement = ISSUE13[mutant]
    await run_scenario(client, db, services, scenario, frozenset(), Tally())  # as shipped: agrees

    put_back(monkeypatch)
    with pytest.raises(Disagreement, match=rf"on action {len(scenario.actions) - 1}:\n  {disagreement}"):
        await run_scenario(client, db, services, scenario, frozenset(), Tally())
