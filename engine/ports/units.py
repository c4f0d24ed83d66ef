"""Units of work: what each workflow family sees of the database, in one transaction.

Each family of workflows (a module of :mod:`engine.workflows`) is typed against its own protocol
below, listing only the repositories it uses; the database adapter is one class that satisfies them
all (:class:`UnitOfWork`), so a workflow still runs in one session and one transaction.

============================  =========================================================
family                        repositories (besides ``audit``)
============================  =========================================================
identity                      users, organizations, login_throttle
accounts                      users, login_throttle, conversations, outbox
organizations                 organizations, compliance_groups
patients                      patients, care_teams, users, facts, break_glass
consents                      consents, consent_lifecycle, compliance_groups,
                              organizations, users, outbox, facts, break_glass
break_glass                   break_glass, outbox, facts
contacts                      contacts
rosters                       care_teams, users, rosters, away, facts, break_glass
conversations, messaging      conversations, messages, deliveries, reads, users, outbox,
                              facts, break_glass (+ idempotency_keys, care_teams, rosters,
                              on_call_routes; messaging: opt_outs, webhook_events)
read_receipts                 conversations, messages, deliveries, reads, facts, break_glass
recalls                       conversations, messages, recalls, attachments, deliveries,
                              outbox, facts, break_glass
retention                     retention, outbox
legal_holds                   legal_holds, conversations, patients, facts, break_glass
attachments                   conversations, messages, attachments, deliveries, outbox,
                              idempotency_keys, facts, break_glass (messaging: attachments,
                              for reads)
audit                         audit_trail
policy_admin                  (audit only)
policy_changes                policy_proposals
============================  =========================================================
"""

from __future__ import annotations

from typing import Any, Protocol, Self

from engine.ports.attachments import MessageAttachments
from engine.ports.audit import AuditFigures, AuditLog, AuditTrail
from engine.ports.consents import (
    BreakGlassRepository,
    ComplianceGroupRepository,
    ConsentLifecycle,
    ConsentRepository,
    ContactDirectory,
)
from engine.ports.identity import LoginThrottleRepository, OrganizationRepository, UserRepository
from engine.ports.messaging import (
    ConversationRepository,
    DeliveryRepository,
    IdempotencyKeys,
    MessageRecalls,
    MessageRepository,
    OptOutRepository,
    Outbox,
    ReadStateRepository,
    WebhookEventLog,
)
from engine.ports.patients import CareTeamRepository, PatientRepository, RelationshipFacts
from engine.ports.policy import PolicyProposalRepository
from engine.ports.retention import LegalHoldRepository, RetentionSweeps
from engine.ports.rosters import AwayRepository, OnCallRoutes, RosterRepository


class Transaction(Protocol):
    """One transaction per workflow, with its audit log. Nothing is written unless ``commit()`` is
    awaited; leaving the block without it records the buffered audit events as denied or failed."""

    @property
    def audit(self) -> AuditLog: ...

    async def commit(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None: ...


class PatientScoped(Transaction, Protocol):
    """What :meth:`engine.services.Guard.patient_facts` reads: a person's relation to a patient and
    their open emergency sessions."""

    @property
    def facts(self) -> RelationshipFacts: ...

    @property
    def break_glass(self) -> BreakGlassRepository: ...


class IdentityUnitOfWork(Transaction, Protocol):
    """engine/workflows/identity.py: registration, login, users and organizations."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def organizations(self) -> OrganizationRepository: ...

    @property
    def login_throttle(self) -> LoginThrottleRepository: ...


class AccountsUnitOfWork(Transaction, Protocol):
    """engine/workflows/accounts.py: approving, deactivating and re-roling accounts."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def login_throttle(self) -> LoginThrottleRepository: ...

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def outbox(self) -> Outbox: ...


class OrganizationsUnitOfWork(Transaction, Protocol):
    """engine/workflows/organizations.py: organizations and compliance groups."""

    @property
    def organizations(self) -> OrganizationRepository: ...

    @property
    def compliance_groups(self) -> ComplianceGroupRepository: ...


class PatientsUnitOfWork(PatientScoped, Protocol):
    """engine/workflows/patients.py: patients and care teams."""

    @property
    def patients(self) -> PatientRepository: ...

    @property
    def consents(self) -> ConsentRepository: ...

    @property
    def care_teams(self) -> CareTeamRepository: ...

    @property
    def users(self) -> UserRepository: ...


class ConsentsUnitOfWork(PatientScoped, Protocol):
    """engine/workflows/consents.py: recording and revoking consents."""

    @property
    def patients(self) -> PatientRepository: ...

    @property
    def consents(self) -> ConsentRepository: ...

    @property
    def consent_lifecycle(self) -> ConsentLifecycle: ...

    @property
    def compliance_groups(self) -> ComplianceGroupRepository: ...

    @property
    def organizations(self) -> OrganizationRepository: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def outbox(self) -> Outbox: ...


class BreakGlassUnitOfWork(PatientScoped, Protocol):
    """engine/workflows/break_glass.py: emergency access (``break_glass`` comes with PatientScoped)."""

    @property
    def outbox(self) -> Outbox: ...


class RostersUnitOfWork(PatientScoped, Protocol):
    """engine/workflows/rosters.py: care teams' on-call rosters and staff away with a delegate."""

    @property
    def care_teams(self) -> CareTeamRepository: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def rosters(self) -> RosterRepository: ...

    @property
    def away(self) -> AwayRepository: ...


class ContactsUnitOfWork(Transaction, Protocol):
    """engine/workflows/contacts.py: organizations' directories of external numbers."""

    @property
    def contacts(self) -> ContactDirectory: ...


class ConversationReading(PatientScoped, Protocol):
    """engine/workflows/conversation_access.py: whether the actor may read a conversation, the
    delivery state of its messages and its members' read state (shared by the conversations,
    messaging and read-receipts families)."""

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def deliveries(self) -> DeliveryRepository: ...

    @property
    def reads(self) -> ReadStateRepository: ...


class ConversationsUnitOfWork(ConversationReading, Protocol):
    """engine/workflows/conversations.py: starting and reading conversations."""

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def idempotency_keys(self) -> IdempotencyKeys: ...

    @property
    def care_teams(self) -> CareTeamRepository: ...

    @property
    def rosters(self) -> RosterRepository: ...

    @property
    def on_call_routes(self) -> OnCallRoutes: ...


class MessagingUnitOfWork(ConversationReading, Protocol):
    """engine/workflows/messaging.py: reading messages, and the chat and SMS events webhooks bring."""

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def attachments(self) -> MessageAttachments: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def opt_outs(self) -> OptOutRepository: ...

    @property
    def webhook_events(self) -> WebhookEventLog: ...


class ReadReceiptsUnitOfWork(ConversationReading, Protocol):
    """engine/workflows/read_receipts.py: marking a conversation read up to a message."""

    @property
    def messages(self) -> MessageRepository: ...


class RecallsUnitOfWork(ConversationReading, Protocol):
    """engine/workflows/recalls.py: recalling and correcting a sent message, its legal record."""

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def recalls(self) -> MessageRecalls: ...

    @property
    def attachments(self) -> MessageAttachments: ...

    @property
    def outbox(self) -> Outbox: ...


class RetentionUnitOfWork(Transaction, Protocol):
    """engine/workflows/retention.py: the sweep of message content whose lifespan has ended."""

    @property
    def retention(self) -> RetentionSweeps: ...

    @property
    def outbox(self) -> Outbox: ...


class AttachmentsUnitOfWork(ConversationReading, Protocol):
    """engine/workflows/attachments.py: attaching a file to a new message, downloading it."""

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def attachments(self) -> MessageAttachments: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def idempotency_keys(self) -> IdempotencyKeys: ...


class LegalHoldsUnitOfWork(PatientScoped, Protocol):
    """engine/workflows/legal_holds.py: placing, lifting and listing legal holds."""

    @property
    def legal_holds(self) -> LegalHoldRepository: ...

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def patients(self) -> PatientRepository: ...


class AuditUnitOfWork(Transaction, Protocol):
    """engine/workflows/audit.py and audit_figures.py: searching the trail, the accounting of
    disclosures, and the counts behind the console's charts."""

    @property
    def audit_trail(self) -> AuditTrail: ...

    @property
    def audit_figures(self) -> AuditFigures: ...


class PolicyChangesUnitOfWork(Transaction, Protocol):
    """engine/workflows/policy_changes.py: proposed policy edits and their four-eyes approval, and the
    organizations (which one governs the policy)."""

    @property
    def policy_proposals(self) -> PolicyProposalRepository: ...

    @property
    def organizations(self) -> OrganizationRepository: ...


class UnitOfWork(
    IdentityUnitOfWork,
    AccountsUnitOfWork,
    OrganizationsUnitOfWork,
    PatientsUnitOfWork,
    ConsentsUnitOfWork,
    BreakGlassUnitOfWork,
    RostersUnitOfWork,
    ContactsUnitOfWork,
    ConversationsUnitOfWork,
    MessagingUnitOfWork,
    ReadReceiptsUnitOfWork,
    RecallsUnitOfWork,
    RetentionUnitOfWork,
    LegalHoldsUnitOfWork,
    AuditUnitOfWork,
    PolicyChangesUnitOfWork,
    Protocol,
):
    """Every family's view at once: what the composition root builds (one class, one transaction)."""


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
