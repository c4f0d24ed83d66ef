"""What every workflow needs, and the guard that decides and records each step.

Longer than 400 lines because Services, Decider and Guard are the one decision path every workflow
takes, and each part is read with the others.

A workflow is: authenticate (done by the caller, who passes an :class:`~engine.model.Actor`) →
gather facts → decide → do the work in one unit of work → enqueue effects → audit → commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Generic, TypeVar

from engine.audit import ANSWERED, AuditEvent, DetailValue
from engine.audit_chain import IdentifierHasher
from engine.consent_index import ConsentIndex, Coverage
from engine.decisions import PURPOSE_NOT_PERMITTED, ROLE_NOT_PERMITTED, Decision, Fact
from engine.errors import Forbidden, NotFound, ServiceUnavailable
from engine.facts import (
    TREATMENT_PURPOSES,
    ConsentCandidate,
    ConsentNeed,
    external_facts,
    millis,
    relation_facts,
)
from engine.login_throttle import (
    ACCOUNT_BACKOFF,
    ADDRESS_BACKOFF,
    NOTICE_BACKOFF,
    REGISTRATION_BACKOFF,
    Backoff,
)
from engine.model import Actor
from engine.policy import Policy, PolicyHolder, WorkflowSpec
from engine.ports.audit import AuditLog
from engine.ports.identity import AccountNotifier, PasswordHasher, PasswordStrength, TokenService
from engine.ports.messaging import DeliveryTrigger, SendUnitOfWork, SendUnitOfWorkFactory
from engine.ports.patients import PatientReadUnitOfWorkFactory, PatientRelation
from engine.ports.units import PatientScoped, Transaction, UnitOfWorkFactory
from engine.sms import SmsRules


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EngineSettings:
    self_registration: bool = True
    default_organization: str = "Default Organization"
    default_page_size: int = 50
    max_page_size: int = 200
    break_glass_minutes: int = 60
    # The organization whose compliance officers may change the policy files (policy.governing_organization).
    governing_organization: str = "Default Organization"
    # Accounts (auth.* settings): see README "Accounts".
    require_approval: bool = False
    password_min_length: int = 15
    account_backoff: Backoff = ACCOUNT_BACKOFF
    address_backoff: Backoff = ADDRESS_BACKOFF
    registration_backoff: Backoff = REGISTRATION_BACKOFF
    notice_backoff: Backoff = NOTICE_BACKOFF


#: What makes a patient treatable: a consent for treatment, whatever its scope.
_TREATMENT = ConsentNeed(purposes=TREATMENT_PURPOSES)


@lru_cache(maxsize=1024)
def _consent_need(spec: WorkflowSpec | None, stated_purpose: str | None) -> ConsentNeed:
    """A workflow's consent need (its scope and purposes, and a stated purpose of use); the same
    few combinations recur on every request, so they are built once."""
    return ConsentNeed(
        frozenset({spec.consent_scope}) if spec is not None and spec.consent_scope else frozenset(),
        spec.purposes if spec is not None else frozenset(),
        stated_purpose,
    )


#: Facts that say a person may know a patient's records exist: a denial then answers 403 with its
#: reason. Without any of them (and without any active consent for the person's organization), a
#: denial answers exactly as a record that does not exist.
KNOWING_FACTS = frozenset(
    {Fact.OWN_ORG, Fact.CARE_TEAM, Fact.COVERED, Fact.MEMBER, Fact.BREAK_GLASS, Fact.TREATABLE, Fact.SHARED}
)


def _no_send_path() -> SendUnitOfWork:
    raise ServiceUnavailable("Sending messages is not configured in this process.")


def _unobserved(decision: Decision) -> None:
    return None


def _no_one_told(user_id: int) -> None:
    return None


@dataclass(frozen=True)
class Services:
    """The dependencies of every workflow, built once by the composition root."""

    uow: UnitOfWorkFactory
    policy: PolicyHolder
    passwords: PasswordHasher
    tokens: TokenService
    delivery: DeliveryTrigger
    settings: EngineSettings = EngineSettings()
    clock: Callable[[], datetime] = utc_now
    # Active organization/group consents, kept current by the composition root (LISTEN/NOTIFY).
    # Empty means no consent covers anyone: deny by default, never allow by default.
    consents: ConsentIndex = field(default_factory=ConsentIndex)
    # What texts to external participants say and who may get full text (policies/sms.toml).
    sms: SmsRules = field(default_factory=SmsRules)
    # Keyed hashes for identifiers the audit trail must find but never store in clear.
    identifiers: IdentifierHasher | None = None
    # The send-message workflow's own unit of work (one read, one write); see SendUnitOfWork.
    send_uow: SendUnitOfWorkFactory = _no_send_path
    # The patient read's own unit of work (one read, one write); None: reads go through ``uow``.
    patient_reads: PatientReadUnitOfWorkFactory | None = None
    # Told of every decision as it is taken (the operations metrics count them by workflow,
    # outcome and reason); must not raise or block.
    on_decision: Callable[[Decision], None] = _unobserved
    # The common/breached-password check; None checks the length only.
    password_strength: PasswordStrength | None = None
    # Tells account owners what was done with their address; None tells no one.
    notifier: AccountNotifier | None = None
    # Told, once committed, of each account whose tokens stopped working (deactivated, re-roled,
    # its sessions ended): this process's account check forgets it at once instead of within
    # ``auth.account_recheck_seconds``; must not raise or block.
    on_sessions_ended: Callable[[int], None] = _no_one_told

    def page_size(self, requested: int | None) -> int:
        if requested is None:
            return self.settings.default_page_size
        return max(1, min(requested, self.settings.max_page_size))


class ConsentView:
    """Which consents cover whom at one moment under one policy version: what decisions ask of
    consents, with nobody acting. A :class:`Decider` is one; the consent-expiry sweep, which the
    service runs on its own, uses one alone.

    The policy is read once, so everything a workflow works out carries the same version even if a
    reload swaps the policy half-way through.
    """

    def __init__(self, services: Services) -> None:
        self.now = services.clock()
        self.now_ms = millis(self.now)
        self.policy: Policy = services.policy.current
        self.consents = services.consents

    def covering_consent(
        self, workflow: str, patient_id: int, organization_id: int, *, exclude: int | None = None
    ) -> Coverage | None:
        """The consent that covers the organization for this workflow's scope and purposes."""
        chosen = self.consents.choose(
            patient_id,
            organization_id,
            self.now_ms,
            _consent_need(self.policy.workflows.get(workflow), None),
            exclude=exclude,
        ).consent
        return None if chosen is None else Coverage(chosen.consent_id, chosen.purpose)

    def external_facts(
        self,
        workflow: str,
        candidates: Iterable[ConsentCandidate],
        *,
        compliance_group_ids: frozenset[int] = frozenset(),
        full_text_group_ids: frozenset[int] = frozenset(),
    ) -> tuple[set[str], dict[str, DetailValue]]:
        """The facts about an external SMS participant for ``workflow``, from the consents naming
        their number or their directory organization (see :func:`engine.facts.external_facts`)."""
        built = external_facts(
            self.policy.workflows.get(workflow),
            candidates,
            self.now,
            compliance_group_ids=compliance_group_ids,
            full_text_group_ids=full_text_group_ids,
        )
        return built.facts, built.details


class Decider(ConsentView):
    """Decides each step of one workflow against one policy version and records every decision in
    the workflow's audit log; the facts come from the caller."""

    def __init__(self, services: Services, audit: AuditLog, actor: Actor) -> None:
        super().__init__(services)
        self.audit = audit
        self.actor = actor
        self._primary_workflow: str | None = None
        self._observe = services.on_decision
        # Patients the actor has no relation to, what a denial about one answers as (not found), and
        # the id the client sent for it (None: the patient's own id, or the decision's record).
        self._unrelated: dict[int, tuple[str, object | None]] = {}
        # While a role refusal gathers its facts: what the actor is answered (see ANSWERED).
        self._answering: str | None = None
        # Whether the last relation noted (see note_relation) is one the actor may know of.
        self._last_known: bool | None = None
        self._patient_organizations: dict[int, int] = {}

    def require(
        self,
        workflow: str,
        facts: Iterable[str] | None = (),
        *,
        resource_type: str | None = None,
        resource_id: object | None = None,
        patient_id: int | None = None,
        subject_role: str | None = None,
        field: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
        unrelated_as: str | None = None,
    ) -> Decision:
        """Decide; record the decision with its facts; raise :class:`Forbidden` unless allowed.

        ``subject_role`` decides about someone other than the actor (a member being added); the
        record still names the actor who asked. A denial about a record the actor has no relation to
        (see :meth:`note_relation`; for a record that is not a patient's, ``unrelated_as`` names it and
        the facts alone tell) raises :class:`NotFound` instead, as for an id that does not exist.
        ``facts=None`` records that the facts were not computed (decided as if none held).
        """
        role = subject_role or self.actor.role.value
        if subject_role is None and self._primary_workflow is None:
            self._primary_workflow = workflow
        fact_set = frozenset(facts or ())
        recorded = dict(details or {})
        decision = self._decide(role, workflow, fact_set, recorded, stated=subject_role is None)
        if facts is None:
            decision = replace(decision, facts=None)  # not computed: `policy diff` cannot replay it
        self._observe(decision)
        concealed = self._concealed(
            decision, role, fact_set, patient_id, subject_role, unrelated_as, resource_id
        )
        if concealed is not None:
            recorded[ANSWERED] = "not_found"  # the record keeps the real reason; the client does not
        if subject_role is not None:
            # The role decided on, as it was then: `policy diff` replays it even if the person changes.
            recorded["subject_role"] = subject_role
        self._record(decision, recorded, resource_type, resource_id, patient_id)
        if concealed is not None:
            # What the actor's organization sees: the same lookup as for an id that does not exist.
            kind, sent_id = concealed
            self.record_missing(workflow, kind, sent_id)
            raise NotFound(kind).concealing(decision)
        if not decision.allowed:
            if subject_role is not None and decision.reason == "role_not_permitted":
                # The denial is about the person being added, not the one asking: say so.
                decision = replace(decision, hint="This person's role may not take part in this.")
            raise Forbidden(decision, field=field)
        return decision

    def _record(
        self,
        decision: Decision,
        details: Mapping[str, DetailValue],
        resource_type: str | None,
        resource_id: object | None,
        patient_id: int | None,
    ) -> None:
        # The purpose of use the client stated, else the purpose of the consent that covered it.
        purpose = self.actor.purpose_of_use or details.get("purpose")
        self.audit.record(
            AuditEvent.for_decision(
                decision,
                actor=self.actor,
                occurred_at=self.now,
                resource_type=resource_type,
                resource_id=resource_id,
                patient_id=patient_id,
                details=details,
                purpose=purpose if isinstance(purpose, str) else None,
                break_glass=Fact.BREAK_GLASS in (decision.facts or ()),
            )
        )

    def _decide(
        self,
        role: str,
        workflow: str,
        facts: frozenset[str],
        details: Mapping[str, DetailValue],
        *,
        stated: bool,
    ) -> Decision:
        """The policy's decision, denied as ``purpose_not_permitted`` when the purpose of use the
        client stated is not one the workflow serves, or kept the only covering consents from counting."""
        decision = self.policy.decide(role, workflow, facts)
        purpose = self.actor.purpose_of_use if stated else None
        spec = self.policy.workflows.get(workflow)
        refused = (
            purpose is not None and spec is not None and bool(spec.purposes) and purpose not in spec.purposes
        )
        if refused or (
            not decision.allowed and details.get("purpose_refused") and Fact.COVERED in decision.missing
        ):
            reason, hint = PURPOSE_NOT_PERMITTED
            return replace(decision, allowed=False, reason=reason, hint=hint, rule=decision.rule)
        return decision

    def permits(
        self,
        workflow: str,
        facts: Iterable[str],
        *,
        resource_type: str,
        resource_id: object,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> bool:
        """Like :meth:`require`, but answers instead of raising: for filtering a list item by item."""
        try:
            self.require(
                workflow,
                facts,
                resource_type=resource_type,
                resource_id=resource_id,
                patient_id=patient_id,
                details=details,
            )
        except (Forbidden, NotFound):
            return False
        return True

    def note_relation(
        self, patient_id: int, facts: Iterable[str], *, unknown_as: str, sent_id: object | None = None
    ) -> None:
        """Remember whether the actor may know that this patient's records exist.

        They may if a fact of :data:`KNOWING_FACTS` holds or any active consent (of any scope or
        purpose) discloses the patient to their organization. If not, :meth:`require` answers a
        denial about the patient with ``NotFound(unknown_as)``, exactly as for an id that does not
        exist, while the audit record keeps the real decision and reason. ``sent_id`` is the id the
        client sent for that record (by default the patient's for a patient, else the decision's
        record's): the lookup recorded beside the denial names it, as a lookup of a missing one would.
        """
        known = bool(frozenset(facts) & KNOWING_FACTS) or (
            self.consents.covering(patient_id, self.actor.organization_id, self.now) is not None
        )
        self._last_known = known
        if known:
            self._unrelated.pop(patient_id, None)
        else:
            self._unrelated[patient_id] = (unknown_as, sent_id)

    def knows_organization(self, patient_id: int, organization_id: int) -> bool:
        """Whether the actor may know of people of ``organization_id`` in a decision about this patient
        (whose facts were gathered): their own organization, the patient's, or one an active consent
        discloses the patient to. Anyone else is answered as a user that does not exist."""
        known = (self.actor.organization_id, self._patient_organizations.get(patient_id))
        return organization_id in known or (
            self.consents.covering(patient_id, organization_id, self.now) is not None
        )

    def _concealed(
        self,
        decision: Decision,
        role: str,
        facts: frozenset[str],
        patient_id: int | None,
        subject_role: str | None,
        unrelated_as: str | None,
        resource_id: object | None,
    ) -> tuple[str, object | None] | None:
        """What a denial is answered as when the actor may not know of its record: the kind of
        record, and the id the client sent for it (as its lookup records it); None to answer it."""
        # A role that may never run the workflow is refused alike for every record, existing or not
        # (its facts are gathered for the audit record only): nothing to conceal. That holds when the
        # refusal names the stated purpose of use instead: a record that does not exist is refused
        # the same way (403), so a 404 here would tell that this one exists.
        if (
            decision.allowed
            or decision.reason == ROLE_NOT_PERMITTED[0]
            or not self.policy.role_may(role, decision.workflow)
        ):
            return None
        if subject_role is not None or facts & KNOWING_FACTS:
            return None
        if unrelated_as is not None:
            return unrelated_as, resource_id
        if patient_id is None or patient_id not in self._unrelated:
            return None
        kind, sent_id = self._unrelated[patient_id]
        if sent_id is None:
            sent_id = patient_id if kind == "patient" else resource_id
        return kind, sent_id

    @contextmanager
    def gathering_for_refusal(self) -> Iterator[None]:
        """While a role refusal gathers the facts it records (see :meth:`refuse_role`): a lookup of
        a record that does not exist is kept from the actor's organization's view, as the facts of
        one that does are, since the actor is told neither (:data:`~engine.audit.ANSWERED`)."""
        self._answering, self._last_known = ROLE_NOT_PERMITTED[0], None
        try:
            yield
        finally:
            self._answering = None

    def refuse_role(
        self,
        workflow: str,
        facts: frozenset[str] | None,
        *,
        resource_type: str,
        resource_id: object | None,
        patient_id: int | None,
        sent_patient_id: int | None = None,
    ) -> None:
        """Record and raise the refusal of a role that may not run ``workflow`` at all, with the facts
        gathered (:meth:`gathering_for_refusal`; None: there is no such record).

        Unless the record is one the actor may know of, the actor's organization sees the refusal as
        for an id that does not exist (facts not computed, the patient as the client named it:
        ``sent_patient_id``), and the record with the facts found stands beside it, for the
        deployment's tools and ``caremsg policy diff`` (:data:`~engine.audit.ANSWERED`).
        """
        if facts is not None and not self._may_know(facts):
            found = self._decide(self.actor.role.value, workflow, facts, {}, stated=True)
            answered = {ANSWERED: ROLE_NOT_PERMITTED[0]}
            self._record(found, answered, resource_type, resource_id, patient_id)
            facts, patient_id = None, sent_patient_id
        self.require(
            workflow, facts, resource_type=resource_type, resource_id=resource_id, patient_id=patient_id
        )

    def _may_know(self, facts: frozenset[str]) -> bool:
        """Whether the record a role refusal gathered ``facts`` for is one the actor may know of: by
        the relation to its patient if one was noted, else by the facts."""
        return self._last_known if self._last_known is not None else bool(facts & KNOWING_FACTS)

    def hide_last(self, workflow: str) -> None:
        """Keep the last decision of ``workflow`` from the actor's organization's view: the workflow
        answers it as a record (a person, a group) that does not exist, and the organization's view
        must show what it shows for one that does not (:data:`~engine.audit.ANSWERED`)."""
        self.audit.amend_last(workflow, details={ANSWERED: "not_found"})

    def identify(self, *, resource_id: object, patient_id: int | None = None) -> None:
        """Attach the id of a record created after its decision to the audit event of the workflow's
        own decision (the actor's first one), not to a later decision about a member."""
        if self._primary_workflow is not None:
            self.audit.amend_last(self._primary_workflow, resource_id=str(resource_id), patient_id=patient_id)

    def annotate(self, **details: DetailValue) -> None:
        """Add details (ids, never PHI) to the audit event of the workflow's own decision."""
        if self._primary_workflow is not None:
            self.audit.amend_last(self._primary_workflow, details=details)

    def relation_facts(
        self,
        workflow: str,
        relation: PatientRelation,
        *,
        organization_id: int | None = None,
        as_actor: bool = True,
    ) -> tuple[set[str], dict[str, DetailValue]]:
        """The facts a person's relation to a patient gives (the actor's organization by default),
        computed by :func:`engine.facts.relation_facts`.

        ``covered`` and ``treatable`` come from the in-memory consent index, counting only consents
        that :func:`engine.facts.choose_consent` accepts for the workflow at this moment (scope,
        purposes, the purpose the actor stated, expiry, revocation). ``break_glass`` holds if the
        relation carries an open emergency session and the workflow declares the fact.
        """
        organization_id = self.actor.organization_id if organization_id is None else organization_id
        spec = self.policy.workflows.get(workflow)
        wanted = spec.facts if spec is not None else frozenset()
        own = relation.patient_organization_id == organization_id
        coverage = treatment = None
        if not own and (spec is None or Fact.COVERED in spec.facts or not spec.facts):
            need = self.consent_need(workflow, stated=as_actor)
            coverage = self.consents.choose(relation.patient_id, organization_id, self.now_ms, need)
        if not own and Fact.TREATABLE in wanted:
            treatment = self.consents.choose(relation.patient_id, organization_id, self.now_ms, _TREATMENT)
        built = relation_facts(
            wanted=wanted,
            own_org=own,
            on_care_team=relation.on_care_team,
            coverage=coverage,
            treatment=treatment,
            break_glass_session_id=relation.break_glass_session_id if as_actor else None,
        )
        if built.purpose_refused:
            built.details["purpose_refused"] = 1
        return built.facts, built.details

    def patient_facts_of(
        self,
        workflow: str,
        patient_id: int,
        relation: PatientRelation | None,
        *,
        organization_id: int | None = None,
        as_actor: bool = True,
        unknown_as: str = "patient",
        sent_id: object | None = None,
    ) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
        """The facts between a person and a patient from their relation as read; 404 (the lookup on
        record) if there is no patient. Every path that decides about a patient comes here:
        :meth:`Guard.patient_facts` and the patient read's own unit of work.

        See :meth:`relation_facts`. For the actor (``as_actor``), a later denial about a patient they
        have no relation to answers ``NotFound(unknown_as)`` (:meth:`note_relation`). An emergency
        session the relation carries means they know of the patient, whether or not the workflow
        uses the ``break_glass`` fact.
        """
        if relation is None:
            self.record_missing(workflow, "patient", patient_id)
            raise NotFound("patient")
        self._patient_organizations[patient_id] = relation.patient_organization_id
        facts, details = self.relation_facts(
            workflow, relation, organization_id=organization_id, as_actor=as_actor
        )
        if as_actor:
            known = set(facts)
            if relation.break_glass_session_id is not None:
                known.add(Fact.BREAK_GLASS)
            self.note_relation(patient_id, known, unknown_as=unknown_as, sent_id=sent_id)
        return frozenset(facts), details

    def consent_need(self, workflow: str, *, stated: bool = True) -> ConsentNeed:
        """What a consent must say to count for ``workflow`` (its scope and purposes, and the purpose
        of use the actor stated when ``stated``)."""
        return _consent_need(
            self.policy.workflows.get(workflow), self.actor.purpose_of_use if stated else None
        )

    def record_missing(self, workflow: str, resource_type: str, resource_id: object) -> None:
        """Record that the record the client named does not exist (hidden from the actor's
        organization while a role refusal gathers its facts: see :data:`ANSWERED`)."""
        self.audit.record(
            AuditEvent.by(
                self.actor,
                event="lookup",
                workflow=workflow,
                outcome="failure",
                occurred_at=self.now,
                resource_type=resource_type,
                resource_id=str(resource_id),
                reason="not_found",
                details={} if self._answering is None else {ANSWERED: self._answering},
            )
        )


class _Unrecorded:
    """An audit log that keeps nothing: for :func:`would_allow`'s look ahead, never for a decision."""

    def record(self, event: AuditEvent) -> None:
        return None

    def amend_last(
        self,
        workflow: str,
        *,
        resource_id: str | None = None,
        patient_id: int | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        return None


def would_allow(services: Services, actor: Actor, workflow: str, facts: Iterable[str]) -> bool:
    """Whether the policy as it stands would allow the actor this step, decided as
    :meth:`Decider.require` decides it (the stated purpose of use included) but neither recorded nor
    counted: for a workflow that prepares something costly before its unit of work opens and would
    waste it on a denial. The workflow still requires the step inside its unit of work, where the
    decision is made again and recorded; a policy reloaded in between is what that one decides by."""
    decider = Decider(services, _Unrecorded(), actor)
    return decider._decide(actor.role.value, workflow, frozenset(facts), {}, stated=True).allowed


U = TypeVar("U", bound=Transaction)
P = TypeVar("P", bound=PatientScoped)


class Guard(Decider, Generic[U]):
    """A :class:`Decider` that gathers a workflow's facts from its unit of work (typed as what the
    workflow's family sees: ``Guard[PatientsUnitOfWork]``)."""

    def __init__(self, services: Services, uow: U, actor: Actor) -> None:
        super().__init__(services, uow.audit, actor)
        self.uow = uow

    async def require_role_recording_facts(
        self,
        workflow: str,
        facts_of: Callable[[], Awaitable[frozenset[str] | None]],
        *,
        resource_type: str,
        resource_id: object | None = None,
        patient_id: int | None = None,
    ) -> None:
        """Deny when no rule lets the actor's role run the workflow at all, before the workflow
        looks its record up; the refusal records the facts the workflow would have had (``facts_of``;
        None if the record does not exist), so ``caremsg policy diff`` can replay it.

        They are gathered after the decision, for the record only: the client gets the same 403
        ``role_not_permitted`` whether or not the record exists, so nothing is revealed. (The send
        path, which reads through its own unit of work, does the same from its one read.) Nor does
        the actor's organization's view of the trail: unless the record is one the actor may know
        of, it shows the refusal as recorded for an id that does not exist (facts not computed),
        and the records with what was found, or not found, are kept beside it (see :data:`ANSWERED`).
        """
        if self.policy.role_may(self.actor.role.value, workflow):
            return
        with self.gathering_for_refusal():
            try:
                facts = await facts_of()
            except NotFound:
                facts = None
        self.refuse_role(
            workflow,
            facts,
            resource_type=resource_type,
            resource_id=resource_id,
            patient_id=patient_id,
            sent_patient_id=patient_id,
        )

    async def require_role_for_patient(
        self: Guard[P],
        workflow: str,
        patient_id: int,
        *,
        resource_type: str,
        resource_id: object | None = None,
    ) -> None:
        """:meth:`require_role_recording_facts` with the facts between the actor and ``patient_id``."""

        async def facts_of() -> frozenset[str]:
            return (await self.patient_facts(workflow, patient_id))[0]

        await self.require_role_recording_facts(
            workflow, facts_of, resource_type=resource_type, resource_id=resource_id, patient_id=patient_id
        )

    async def patient_facts(
        self: Guard[P],
        workflow: str,
        patient_id: int,
        *,
        user_id: int | None = None,
        organization_id: int | None = None,
        unknown_as: str = "patient",
        sent_id: object | None = None,
    ) -> tuple[frozenset[str], Mapping[str, DetailValue]]:
        """The facts between a person (the actor by default) and a patient; 404 if there is no patient.

        See :meth:`Decider.relation_facts`; ``break_glass`` also holds while the actor has an open
        emergency session for the patient, if the workflow can use it. For the actor, a later denial
        about a patient they have no relation to answers ``NotFound(unknown_as)``: the id the client
        sent names that kind of record (see :meth:`Decider.note_relation`).
        """
        is_actor = user_id is None or user_id == self.actor.user_id
        user_id = self.actor.user_id if user_id is None else user_id
        spec = self.policy.workflows.get(workflow)
        uses_break_glass = is_actor and spec is not None and Fact.BREAK_GLASS in spec.facts
        relation = await self.uow.facts.patient_relation(
            patient_id, user_id=user_id, break_glass_at=self.now if uses_break_glass else None
        )
        facts, details = self.patient_facts_of(
            workflow,
            patient_id,
            relation,
            organization_id=organization_id,
            as_actor=is_actor,
            unknown_as=unknown_as,
            sent_id=sent_id,
        )
        if (
            is_actor
            and not uses_break_glass
            and not facts & KNOWING_FACTS
            and await self.uow.break_glass.open_session(user_id, patient_id, self.now) is not None
        ):
            # An open emergency session means they know of the patient, whatever this workflow uses.
            self.note_relation(patient_id, {Fact.BREAK_GLASS}, unknown_as=unknown_as, sent_id=sent_id)
        return facts, details
