"""The fact builder (engine/facts.py) on its own: which consent counts, in which order, at which
moment; the facts of a relation and of an external participant; why a text must not go out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.consent_index import ConsentIndex, IndexedConsent
from engine.decisions import Fact
from engine.errors import Forbidden
from engine.facts import (
    ConsentCandidate,
    ConsentChoice,
    ConsentNeed,
    answer_refusal,
    choose_consent,
    external_facts,
    millis,
    relation_facts,
    sms_refusal,
)
from engine.model import Actor, RecipientType, Role
from engine.policy import PolicyHolder, WorkflowSpec
from engine.ports import PatientRelation
from engine.services import Decider, Services
from integrations.db.uow import BufferedAuditLog
from integrations.policy_files import load_policy

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
NOW_MS = millis(NOW)
HOUR = 3_600_000
ALL = frozenset({"read", "message", "sms"})
ORG, GROUP, PHONE = RecipientType.ORGANIZATION, RecipientType.COMPLIANCE_GROUP, RecipientType.EXTERNAL


def consent(
    consent_id: int,
    kind: RecipientType = ORG,
    *,
    scope: frozenset[str] = ALL,
    purpose: str = "treatment",
    effective_ms: int = 0,
    expires_ms: int | None = None,
    revoked_ms: int | None = None,
) -> ConsentCandidate:
    return ConsentCandidate(consent_id, kind, scope, purpose, effective_ms, expires_ms, revoked_ms)


def chosen(choice: ConsentChoice) -> int | None:
    return choice.consent.consent_id if choice.consent else None


MESSAGE_NEED = ConsentNeed(frozenset({"message"}), frozenset({"treatment", "care_coordination"}))


def test_the_most_specific_recipient_wins_whatever_the_ids() -> None:
    candidates = [consent(1, GROUP), consent(2, ORG), consent(3, PHONE)]
    assert chosen(choose_consent(candidates, MESSAGE_NEED, NOW_MS)) == 3
    assert chosen(choose_consent(candidates[:2], MESSAGE_NEED, NOW_MS)) == 2


def test_among_equally_specific_consents_the_longest_lasting_then_the_lowest_id_wins() -> None:
    soon, later = NOW_MS + HOUR, NOW_MS + 10 * HOUR
    assert (
        chosen(
            choose_consent([consent(1, expires_ms=soon), consent(2, expires_ms=later)], MESSAGE_NEED, NOW_MS)
        )
        == 2
    )
    assert chosen(choose_consent([consent(1, expires_ms=later), consent(2)], MESSAGE_NEED, NOW_MS)) == 2
    assert chosen(choose_consent([consent(5), consent(4)], MESSAGE_NEED, NOW_MS)) == 4


def test_the_choice_does_not_depend_on_the_order_rows_arrive_in() -> None:
    candidates = [consent(7, ORG), consent(3, GROUP), consent(5, ORG, expires_ms=NOW_MS + HOUR)]
    assert {
        chosen(choose_consent(order, MESSAGE_NEED, NOW_MS)) for order in (candidates, candidates[::-1])
    } == {7}


@pytest.mark.parametrize(
    "candidate",
    [
        pytest.param(consent(1, scope=frozenset({"read"})), id="scope-without-message"),
        pytest.param(consent(1, purpose="payment"), id="purpose-the-workflow-does-not-serve"),
        pytest.param(consent(1, expires_ms=NOW_MS), id="expired-at-this-moment"),
        pytest.param(consent(1, revoked_ms=NOW_MS - 1), id="revoked"),
        pytest.param(consent(1, effective_ms=NOW_MS + 1), id="not-yet-effective"),
    ],
)
def test_a_consent_that_does_not_say_enough_at_this_moment_counts_for_nothing(
    candidate: ConsentCandidate,
) -> None:
    assert choose_consent([candidate], MESSAGE_NEED, NOW_MS) == ConsentChoice(None)


def test_a_revocation_in_the_future_of_the_decision_does_not_end_it_yet() -> None:
    assert chosen(choose_consent([consent(1, revoked_ms=NOW_MS + 1)], MESSAGE_NEED, NOW_MS)) == 1


def test_a_stated_purpose_keeps_only_consents_given_for_it_and_says_so() -> None:
    need = ConsentNeed(
        frozenset({"read"}), frozenset({"treatment", "care_coordination"}), "care_coordination"
    )
    refused = choose_consent([consent(1, purpose="treatment")], need, NOW_MS)
    assert refused == ConsentChoice(None, purpose_refused=True)
    assert chosen(choose_consent([consent(1), consent(2, purpose="care_coordination")], need, NOW_MS)) == 2


def test_a_stated_purpose_the_workflow_does_not_serve_is_refused_even_without_consents() -> None:
    need = ConsentNeed(frozenset(), frozenset({"treatment"}), "payment")
    assert choose_consent([], need, NOW_MS).purpose_refused


def test_exclude_asks_who_would_still_be_covered_without_one_consent() -> None:
    assert chosen(choose_consent([consent(1), consent(2)], MESSAGE_NEED, NOW_MS, exclude=1)) == 2


def test_write_is_a_scope_of_its_own() -> None:
    need = ConsentNeed(frozenset({"write"}))
    assert choose_consent([consent(1)], need, NOW_MS).consent is None
    assert chosen(choose_consent([consent(1, scope=frozenset({"read", "write"}))], need, NOW_MS)) == 1


# --- facts -------------------------------------------------------------------------------------------


def test_ones_own_organizations_patient_is_covered_and_treatable_without_a_consent() -> None:
    built = relation_facts(
        wanted=frozenset({Fact.TREATABLE}),
        own_org=True,
        on_care_team=True,
        coverage=None,
        treatment=None,
        break_glass_session_id=None,
    )
    assert built.facts == {Fact.OWN_ORG, Fact.COVERED, Fact.TREATABLE, Fact.CARE_TEAM}


def test_a_consent_covers_and_the_decision_records_which_one() -> None:
    built = relation_facts(
        wanted=frozenset(),
        own_org=False,
        on_care_team=False,
        coverage=ConsentChoice(consent(9, purpose="care_coordination")),
        treatment=None,
        break_glass_session_id=None,
    )
    assert built.facts == {Fact.COVERED}
    assert built.details == {"consent_id": 9, "purpose": "care_coordination"}


def test_break_glass_and_treatable_hold_only_where_the_workflow_declares_them() -> None:
    def facts(wanted: frozenset[str]) -> set[str]:
        return relation_facts(
            wanted=wanted,
            own_org=False,
            on_care_team=False,
            coverage=ConsentChoice(None),
            treatment=ConsentChoice(consent(1)),
            break_glass_session_id=4,
        ).facts

    assert facts(frozenset()) == set()
    assert facts(frozenset({Fact.BREAK_GLASS, Fact.TREATABLE})) == {Fact.BREAK_GLASS, Fact.TREATABLE}


def _spec(scope: str | None, purposes: frozenset[str] = frozenset()) -> WorkflowSpec:
    return WorkflowSpec("w", "", "conversation", True, frozenset({"external_consent"}), scope, purposes)


def test_an_external_participant_always_needs_sms_in_the_consents_scope() -> None:
    join = _spec("message", frozenset({"treatment", "care_coordination"}))
    message_only = consent(1, PHONE, scope=frozenset({"message"}))
    assert external_facts(join, [message_only], NOW).facts == set()
    sms_only = consent(2, PHONE, scope=frozenset({"sms"}))
    assert external_facts(join, [sms_only], NOW).facts == set()
    both = consent(3, ORG, scope=frozenset({"sms", "message"}))
    assert external_facts(join, [message_only, sms_only, both], NOW).details["consent_id"] == 3


def test_the_full_text_group_fact_comes_from_the_recipients_groups() -> None:
    built = external_facts(
        _spec(None),
        [consent(1, PHONE)],
        NOW,
        compliance_group_ids=frozenset({7}),
        full_text_group_ids=frozenset({7}),
    )
    assert built.facts == {Fact.EXTERNAL_CONSENT, Fact.SMS_FULL_TEXT_GROUP}


@pytest.mark.parametrize(
    ("removed", "opted_out", "consented", "textable", "reason"),
    [
        (True, True, False, False, "removed"),
        (False, True, False, False, "opted_out"),
        (False, False, False, False, "no_sms_consent"),
        (False, False, True, False, "invalid_number"),
        (False, False, True, True, None),
    ],
)
def test_one_refusal_order_for_planning_and_for_the_relay(
    removed: bool, opted_out: bool, consented: bool, textable: bool, reason: str | None
) -> None:
    assert sms_refusal(removed=removed, opted_out=opted_out, consented=consented, textable=textable) == reason


@pytest.mark.parametrize(
    ("confirms_stop", "opted_out", "textable", "reason"),
    [
        (True, True, True, None),  # the STOP's own confirmation: the one text an opted-out number gets
        (True, True, False, "invalid_number"),
        (False, True, True, "opted_out"),  # HELP, START's confirmation, the which-conversation question
        (False, True, False, "opted_out"),
        (False, False, False, "invalid_number"),
        (False, False, True, None),
    ],
)
def test_an_answer_to_a_number_obeys_the_same_rule_but_for_the_stop_confirmation(
    confirms_stop: bool, opted_out: bool, textable: bool, reason: str | None
) -> None:
    assert answer_refusal(confirms_stop=confirms_stop, opted_out=opted_out, textable=textable) == reason


# --- the consent index feeds the same choice ---------------------------------------------------------


def test_the_consent_index_chooses_by_the_same_rules() -> None:
    index = ConsentIndex()
    group_consent = IndexedConsent(
        1, 100, GROUP, 50, frozenset(ALL), "treatment", NOW - timedelta(days=1), None
    )
    expiring = IndexedConsent(
        2, 100, ORG, 10, frozenset(ALL), "treatment", NOW - timedelta(days=1), NOW + timedelta(hours=1)
    )
    lasting = IndexedConsent(3, 100, ORG, 10, frozenset(ALL), "treatment", NOW - timedelta(days=1), None)
    index.replace_all([group_consent, expiring, lasting], {50: [10]}, NOW, seq=1)

    assert chosen(index.choose(100, 10, NOW_MS, MESSAGE_NEED)) == 3
    assert chosen(index.choose(100, 10, NOW_MS, MESSAGE_NEED, exclude=3)) == 2
    assert chosen(index.choose(100, 10, NOW_MS + 2 * HOUR, MESSAGE_NEED, exclude=3)) == 1
    assert index.choose(100, 11, NOW_MS, MESSAGE_NEED).consent is None


# --- the Decider asks the fact builder: the send path's facts are the request path's -------------------

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"


def _decider(
    index: ConsentIndex, *, purpose: str | None = None, org: int = 10
) -> tuple[Decider, BufferedAuditLog]:
    services = Services(
        uow=None,  # type: ignore[arg-type]
        policy=PolicyHolder(load_policy(POLICY_DIR)),
        passwords=None,  # type: ignore[arg-type]
        tokens=None,  # type: ignore[arg-type]
        delivery=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
        consents=index,
    )
    audit = BufferedAuditLog()
    actor = Actor(1, Role.CARE_TEAM_MEMBER, org, purpose_of_use=purpose)
    return Decider(services, audit, actor), audit


def _index(*consents: IndexedConsent) -> ConsentIndex:
    index = ConsentIndex()
    index.replace_all(consents, {}, NOW, seq=1)
    return index


def _org_consent(
    consent_id: int, *, scope: frozenset[str] = ALL, purpose: str = "treatment"
) -> IndexedConsent:
    return IndexedConsent(consent_id, 100, ORG, 10, scope, purpose, NOW - timedelta(days=1), None)


def test_the_send_path_gets_break_glass_from_the_same_builder_as_requests() -> None:
    decider, audit = _decider(_index())
    relation = PatientRelation(100, 20, False, break_glass_session_id=5)

    facts, details = decider.relation_facts("message.send", relation)

    assert Fact.BREAK_GLASS in facts
    assert details["break_glass_session_id"] == 5
    decider.permits("message.send", facts | {Fact.MEMBER}, resource_type="conversation", resource_id=1)
    assert audit.pending[-1].break_glass is True


def test_a_read_only_consent_covers_reading_but_not_writing() -> None:
    decider, _ = _decider(_index(_org_consent(1, scope=frozenset({"read"}))))
    relation = PatientRelation(100, 20, True)

    assert Fact.COVERED in decider.relation_facts("patient.read", relation)[0]
    assert Fact.COVERED not in decider.relation_facts("patient.update", relation)[0]


def test_a_stated_purpose_the_consent_was_not_given_for_is_denied_with_that_reason() -> None:
    decider, audit = _decider(_index(_org_consent(1, purpose="treatment")), purpose="care_coordination")
    facts, details = decider.relation_facts("patient.read", PatientRelation(100, 20, True))

    with pytest.raises(Forbidden):
        decider.require("patient.read", facts, resource_type="patient", details=details)

    assert (audit.pending[-1].decision, audit.pending[-1].reason) == ("deny", "purpose_not_permitted")


def test_treatable_needs_a_consent_for_treatment_and_records_it() -> None:
    for purpose, expected in (("payment", False), ("treatment", True)):
        decider, _ = _decider(_index(_org_consent(3, scope=frozenset({"message"}), purpose=purpose)))
        facts, details = decider.relation_facts("break_glass.open", PatientRelation(100, 20, False))
        assert (Fact.TREATABLE in facts) is expected
        assert details.get("consent_id") == (3 if expected else None)


def test_a_decision_resting_on_a_part2_consent_says_so_beside_its_consent_id() -> None:
    part2 = ConsentCandidate(
        5, RecipientType.EXTERNAL, frozenset({"sms", "message"}), "treatment", part2=True
    )
    plain = part2._replace(consent_id=6, part2=False)

    noticed = external_facts(None, [part2], NOW).details
    silent = external_facts(None, [plain], NOW).details

    assert (noticed["consent_id"], noticed["part2"]) == (5, True)
    assert (silent["consent_id"], "part2" in silent) == (6, False)
