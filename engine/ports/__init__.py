"""Ports: what the engine needs from the outside world, as protocols, one module per capability.

``integrations`` provides the adapters (PostgreSQL, Sendbird, argon2, JWT); tests/support/fakes.py the fakes.

- :mod:`engine.ports.identity`: users, organizations, passwords, tokens, login throttling
- :mod:`engine.ports.patients`: patients, care teams, relationship facts, the patient read
- :mod:`engine.ports.consents`: consents, compliance groups, break-the-glass, contact directories
- :mod:`engine.ports.messaging`: conversations, messages, deliveries, opt-outs, webhooks, the send path
- :mod:`engine.ports.audit`: the audit log and trail
- :mod:`engine.ports.gateways`: the chat and SMS providers
- :mod:`engine.ports.policy`: policy reloads, the policy files, proposed edits (four eyes)
- :mod:`engine.ports.units`: the unit of work each workflow family sees

Engine code imports from the capability modules; the names are also re-exported here so that a
reader (or an adapter) can name a port without knowing which capability declares it.
"""

from __future__ import annotations

from engine.ports.audit import (
    AuditChain,
    AuditLog,
    AuditRecordStream,
    AuditTrail,
)
from engine.ports.consents import (
    BreakGlassRepository,
    BreakGlassSession,
    ComplianceGroupRepository,
    ConsentLifecycle,
    ConsentRepository,
    ContactDirectory,
    ExpiredConsent,
    ExternalCoverage,
    NewConsent,
)
from engine.ports.gateways import (
    ChatGateway,
    ChatPostKind,
    SentChatMessage,
    SmsGateway,
)
from engine.ports.identity import (
    AccountDirectory,
    AccountNotifier,
    IssuedToken,
    LoginThrottleRepository,
    NewUser,
    OrganizationRepository,
    PasswordHasher,
    PasswordStrength,
    TokenService,
    UserRepository,
)
from engine.ports.messaging import (
    ConversationRepository,
    DeliveryRepository,
    DeliveryTrigger,
    IdempotencyKeys,
    MessageRecalls,
    MessageRepository,
    NewDelivery,
    NewExternalParticipant,
    NewSend,
    OptOutRepository,
    Outbox,
    ReadStateRepository,
    RecallOutcome,
    ReplyRoute,
    SendContext,
    SendUnitOfWork,
    SendUnitOfWorkFactory,
    SmsRecipient,
    WebhookEventLog,
)
from engine.ports.patients import (
    CareTeamRepository,
    NewPatient,
    PatientRead,
    PatientReadUnitOfWork,
    PatientReadUnitOfWorkFactory,
    PatientRelation,
    PatientRepository,
    RelationshipFacts,
)
from engine.ports.policy import (
    NewPolicyProposal,
    PolicyDirectory,
    PolicyProposal,
    PolicyProposalRepository,
    PolicyReloader,
    ProposalState,
    ReloadResult,
)
from engine.ports.units import (
    AccountsUnitOfWork,
    AuditUnitOfWork,
    BreakGlassUnitOfWork,
    ConsentsUnitOfWork,
    ContactsUnitOfWork,
    ConversationsUnitOfWork,
    IdentityUnitOfWork,
    MessagingUnitOfWork,
    OrganizationsUnitOfWork,
    PatientScoped,
    PatientsUnitOfWork,
    PolicyChangesUnitOfWork,
    ReadReceiptsUnitOfWork,
    Transaction,
    UnitOfWork,
    UnitOfWorkFactory,
)

__all__ = [
    "AccountDirectory",
    "AccountNotifier",
    "AccountsUnitOfWork",
    "AuditChain",
    "AuditLog",
    "AuditRecordStream",
    "AuditTrail",
    "AuditUnitOfWork",
    "BreakGlassRepository",
    "BreakGlassSession",
    "BreakGlassUnitOfWork",
    "CareTeamRepository",
    "ChatGateway",
    "ChatPostKind",
    "ComplianceGroupRepository",
    "ConsentLifecycle",
    "ConsentRepository",
    "ConsentsUnitOfWork",
    "ContactDirectory",
    "ContactsUnitOfWork",
    "ConversationRepository",
    "ConversationsUnitOfWork",
    "DeliveryRepository",
    "DeliveryTrigger",
    "ExpiredConsent",
    "ExternalCoverage",
    "IdempotencyKeys",
    "IdentityUnitOfWork",
    "IssuedToken",
    "LoginThrottleRepository",
    "MessageRecalls",
    "MessageRepository",
    "MessagingUnitOfWork",
    "NewConsent",
    "NewDelivery",
    "NewExternalParticipant",
    "NewPatient",
    "NewPolicyProposal",
    "NewSend",
    "NewUser",
    "OptOutRepository",
    "OrganizationRepository",
    "OrganizationsUnitOfWork",
    "Outbox",
    "PasswordHasher",
    "PasswordStrength",
    "PatientRead",
    "PatientReadUnitOfWork",
    "PatientReadUnitOfWorkFactory",
    "PatientRelation",
    "PatientRepository",
    "PatientScoped",
    "PatientsUnitOfWork",
    "PolicyChangesUnitOfWork",
    "PolicyDirectory",
    "PolicyProposal",
    "PolicyProposalRepository",
    "PolicyReloader",
    "ProposalState",
    "ReadReceiptsUnitOfWork",
    "ReadStateRepository",
    "RecallOutcome",
    "RelationshipFacts",
    "ReloadResult",
    "ReplyRoute",
    "SendContext",
    "SendUnitOfWork",
    "SendUnitOfWorkFactory",
    "SentChatMessage",
    "SmsGateway",
    "SmsRecipient",
    "TokenService",
    "Transaction",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UserRepository",
    "WebhookEventLog",
]
