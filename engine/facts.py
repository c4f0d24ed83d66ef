"""The fact builder: every fact of policies/README.md, computed in one place for every path that decides.

Requests (:class:`engine.services.Guard`), the send path (:class:`engine.services.Decider` over one
SQL read), the relay right before a text goes out, inbound SMS replies and consent revocation all
hand their raw inputs (a :class:`~engine.ports.PatientRelation`, consent rows, an SMS recipient) to
the functions here and get back the same facts for the same inputs. Adapters may gather rows in
SQL; which consent *counts* is decided only by :func:`choose_consent`.

Which consent counts for a decision (written out in policies/README.md, "Which consent is used"):

1. it is active at the moment of the decision: effective, not expired, not revoked;
2. its scope holds every scope the decision needs (the workflow's ``consent_scope``; an external
   SMS participant also always needs ``sms``);
3. its purpose is one the workflow accepts (``purposes``; none declared: any), and, when the client
   stated a purpose of use (``X-Purpose-Of-Use``), exactly that purpose;
4. among several that qualify: the most specific recipient first (a phone number, then an
   organization, then a compliance group), then the one that lasts longest (no expiry first, then
   the latest expiry), then the lowest id. The decision records the id of the one chosen.

Everything here is pure: no I/O, the time of the decision is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from engine.audit import DetailValue
from engine.decisions import Fact
from engine.model import ConsentScope, Purpose, RecipientType
from engine.policy import WorkflowSpec

#: Most specific recipient first: a consent naming the very person outranks one naming their
#: organization, which outranks one naming a group of organizations.
SPECIFICITY: Mapping[RecipientType, int] = {
    RecipientType.EXTERNAL: 0,
    RecipientType.ORGANIZATION: 1,
    RecipientType.COMPLIANCE_GROUP: 2,
}

#: What makes a patient *treatable* by an organization besides being its own: a consent for treatment.
TREATMENT_PURPOSES = frozenset({Purpose.TREATMENT.value})


def millis(at: datetime) -> int:
    """A moment as milliseconds since the epoch (how consent times are compared)."""
    return int(at.timestamp() * 1000)


class ConsentCandidate(NamedTuple):
    """One consent as a decision weighs it; times in milliseconds since the epoch.

    A named tuple, not a dataclass: the consent index builds one per matching entry on every
    decision, and a tuple is the cheapest immutable record Python has.
    """

    consent_id: int
    recipient_type: RecipientType
    scope: frozenset[str]
    purpose: str
    effective_ms: int = 0
    expires_ms: int | None = None
    revoked_ms: int | None = None
    #: A 42 CFR Part 2 consent: what is disclosed under it carries the 2.32 notice.
    part2: bool = False

    def active(self, at_ms: int) -> bool:
        """Effective, and neither expired nor revoked, at ``at_ms``."""
        if self.revoked_ms is not None and self.revoked_ms <= at_ms:
            return False
        if self.expires_ms is not None and self.expires_ms <= at_ms:
            return False
        return self.effective_ms <= at_ms

    def rank(self) -> tuple[int, int, int, int]:
        """Sort key of the documented preference: specific recipient, longest lasting, lowest id."""
        lasts = (0, 0) if self.expires_ms is None else (1, -self.expires_ms)
        return (SPECIFICITY[self.recipient_type], *lasts, self.consent_id)


@dataclass(frozen=True)
class ConsentNeed:
    """What a consent must say to count for one decision."""

    scopes: frozenset[str] = frozenset()
    #: The purposes the workflow accepts; empty: any purpose.
    purposes: frozenset[str] = frozenset()
    #: The purpose of use the client stated for this request, if any: then only that one counts.
    stated_purpose: str | None = None

    def purpose_accepted(self, purpose: str) -> bool:
        """True if the workflow accepts ``purpose`` (ignoring what the client stated)."""
        return not self.purposes or purpose in self.purposes

    @property
    def stated_purpose_refused(self) -> bool:
        """The client stated a purpose the workflow does not serve: no consent can count."""
        return self.stated_purpose is not None and not self.purpose_accepted(self.stated_purpose)


class ConsentChoice(NamedTuple):
    """The consent chosen for a decision (None: none counts) and why none did, if so."""

    consent: ConsentCandidate | None
    #: A consent would have counted, but not for the purpose of use the client stated.
    purpose_refused: bool = False


NO_CONSENT = ConsentChoice(None)
REFUSED_FOR_PURPOSE = ConsentChoice(None, purpose_refused=True)


def choose_consent(
    candidates: Iterable[ConsentCandidate], need: ConsentNeed, at_ms: int, *, exclude: int | None = None
) -> ConsentChoice:
    """The one consent that counts for a decision, by the rules in the module docstring.

    ``exclude`` leaves one consent out (a revocation asks who would still be covered without it).
    """
    best: ConsentCandidate | None = None
    best_rank: tuple[int, int, int, int] | None = None
    scopes, purposes, stated = need.scopes, need.purposes, need.stated_purpose
    refused = need.stated_purpose_refused
    for candidate in candidates:
        if candidate.consent_id == exclude or not candidate.active(at_ms):
            continue
        if not scopes <= candidate.scope or (purposes and candidate.purpose not in purposes):
            continue
        if stated is not None and candidate.purpose != stated:
            refused = True
            continue
        if best is None:
            best = candidate  # usually the only one: rank only when there is a choice to make
            continue
        if best_rank is None:
            best_rank = best.rank()
        rank = candidate.rank()
        if rank < best_rank:
            best, best_rank = candidate, rank
    if best is None:
        return REFUSED_FOR_PURPOSE if refused else NO_CONSENT
    return ConsentChoice(best)


# --- facts -----------------------------------------------------------------------------------------


@dataclass
class Facts:
    """The facts that hold for one decision, the details the audit record keeps about them (which
    consent, which emergency session), and whether a stated purpose kept a consent from counting."""

    facts: set[str] = field(default_factory=set)
    details: dict[str, DetailValue] = field(default_factory=dict)
    purpose_refused: bool = False

    def add_consent(self, fact: str, choice: ConsentChoice) -> None:
        if choice.consent is not None:
            self.facts.add(fact)
            self.details["consent_id"] = choice.consent.consent_id
            self.details["purpose"] = choice.consent.purpose
            if choice.consent.part2:
                self.details["part2"] = True
        elif choice.purpose_refused:
            self.purpose_refused = True


def relation_facts(
    *,
    wanted: frozenset[str],
    own_org: bool,
    on_care_team: bool,
    coverage: ConsentChoice | None,
    treatment: ConsentChoice | None,
    break_glass_session_id: int | None,
) -> Facts:
    """The facts between a person and a patient.

    - ``own_org``: the patient belongs to the person's organization; then ``covered`` holds too;
    - ``covered``: own organization, or ``coverage`` (the consent chosen for the workflow);
    - ``care_team``: on the patient's care team;
    - ``treatable``: own organization, or a consent for treatment (``treatment``) discloses the
      patient to the person's organization, whatever its scope;
    - ``break_glass``: an emergency session of the person for the patient is open now.

    ``break_glass`` and ``treatable`` are added only if ``wanted`` (the workflow declares them).
    """
    out = Facts()
    if own_org:
        out.facts |= {Fact.OWN_ORG, Fact.COVERED, Fact.TREATABLE}
    else:
        if coverage is not None:
            out.add_consent(Fact.COVERED, coverage)
        if treatment is not None and treatment.consent is not None and Fact.TREATABLE in wanted:
            out.facts.add(Fact.TREATABLE)
            if Fact.COVERED not in out.facts:
                # The consent this decision rests on is the treatment one: record it.
                out.add_consent(Fact.TREATABLE, treatment)
    if on_care_team:
        out.facts.add(Fact.CARE_TEAM)
    if break_glass_session_id is not None and Fact.BREAK_GLASS in wanted:
        out.facts.add(Fact.BREAK_GLASS)
        out.details["break_glass_session_id"] = break_glass_session_id
    if Fact.TREATABLE not in wanted:
        out.facts.discard(Fact.TREATABLE)
    return out


def external_facts(
    spec: WorkflowSpec | None,
    candidates: Iterable[ConsentCandidate],
    at: datetime,
    *,
    compliance_group_ids: frozenset[int] = frozenset(),
    full_text_group_ids: frozenset[int] = frozenset(),
) -> Facts:
    """The facts about an external SMS participant for a workflow (``spec``): ``external_consent``
    (a consent counts among those naming their number, or their directory organization: with ``sms``
    and the workflow's scope, for one of its purposes), and ``sms_full_text_group`` (their directory
    organization is in a group policies/sms.toml names for full text)."""
    need = external_need(spec.consent_scope if spec else None, spec.purposes if spec else frozenset())
    coverage = choose_consent(candidates, need, millis(at))
    out = Facts()
    out.add_consent(Fact.EXTERNAL_CONSENT, coverage)
    out.details["consent_id"] = coverage.consent.consent_id if coverage.consent else None
    if compliance_group_ids & full_text_group_ids:
        out.facts.add(Fact.SMS_FULL_TEXT_GROUP)
    return out


def external_need(consent_scope: str | None, purposes: frozenset[str]) -> ConsentNeed:
    """What a consent must say to let an external participant take part: ``sms`` in its scope, plus
    the workflow's own scope and purposes."""
    scopes = {ConsentScope.SMS.value}
    if consent_scope:
        scopes.add(consent_scope)
    return ConsentNeed(frozenset(scopes), purposes)


def sms_refusal(*, removed: bool, opted_out: bool, consented: bool, textable: bool) -> str | None:
    """Why a text to an external participant must not go out now, or None: one order for every path
    (planning a message's deliveries, and the relay right before texting).

    ``removed`` (left the conversation when their coverage ended), then ``opted_out`` (texted STOP),
    then ``no_sms_consent`` (no consent counts for them now), then ``invalid_number``.
    """
    if removed:
        return "removed"
    if opted_out:
        return "opted_out"
    if not consented:
        return "no_sms_consent"
    if not textable:
        return "invalid_number"
    return None


def answer_refusal(*, confirms_stop: bool, opted_out: bool, textable: bool) -> str | None:
    """Why caremsg's answer to a text a number sent (a keyword's answer, the question which
    conversation a reply means) must not go out now, or None: the rule of every text,
    :func:`sms_refusal`, asked at decision time and again by the relay right before texting.

    The confirmation of STOP (``confirms_stop``) is the one text a number that opted out gets
    (carriers and CTIA expect it): only an invalid number refuses it. Every other answer obeys the
    rule as a message's text does, opted out first; it answers the person's own text and says
    nothing of a patient, so no consent is asked of it, and it goes to the number whichever of its
    conversations it is addressed from.
    """
    if confirms_stop:
        return None if textable else "invalid_number"
    return sms_refusal(removed=False, opted_out=opted_out, consented=True, textable=textable)


def message_facts(
    spec: WorkflowSpec | None, *, actor_id: int, sender_id: int, sent_at: datetime, now: datetime
) -> frozenset[str]:
    """The facts between a person and a message they would act on, among those the workflow declares:
    ``sender`` (they sent it) and ``recall_window`` (it was sent less than the workflow's
    ``window_minutes`` ago; the window's end itself is outside it)."""
    wanted = spec.facts if spec is not None else frozenset()
    facts: set[str] = set()
    if Fact.SENDER in wanted and actor_id == sender_id:
        facts.add(Fact.SENDER)
    in_window = spec is not None and (now - sent_at).total_seconds() < spec.window_minutes * 60
    if Fact.RECALL_WINDOW in wanted and in_window:
        facts.add(Fact.RECALL_WINDOW)
    return frozenset(facts)
