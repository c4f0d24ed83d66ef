"""SQLModel table models, one module per capability, mirroring engine/ports. They stay in this
adapter: repositories turn rows into engine types, and every query names a table through its class
(:func:`integrations.db.columns.table_of`).

Alembic owns the schema (migrations/); nothing here is ever created with ``create_all()``. Importing
this package registers every table on ``metadata`` (Alembic and the migration tests read it whole).
"""

from __future__ import annotations

# Re-exported: once this package is imported, every table of the schema is registered on it.
from integrations.db.columns import metadata as metadata
from integrations.db.tables.attachments import MessageAttachmentRow
from integrations.db.tables.audit import AuditAnchorRow, AuditChainRow, AuditEventRow
from integrations.db.tables.consents import (
    BreakGlassReviewRow,
    BreakGlassSessionRow,
    ComplianceGroupMemberRow,
    ComplianceGroupRow,
    ComplianceGroupShareRow,
    ConsentChangeRow,
    ConsentRow,
    OrganizationContactRow,
    Part2NoticeRow,
)
from integrations.db.tables.identity import LoginThrottleRow, OrganizationRow, UserRow
from integrations.db.tables.messaging import (
    ConversationMemberRow,
    ConversationOnCallRow,
    ConversationReadRow,
    ConversationRow,
    EscalationStepRow,
    ExternalParticipantRow,
    IdempotencyKeyRow,
    LegalHoldRow,
    MessageDeliveryRow,
    MessageRecallRow,
    MessageRow,
    OutboxRow,
    SmsOptOutRow,
    WebhookEventRow,
)
from integrations.db.tables.patients import (
    CareTeamMemberRow,
    CareTeamRow,
    OnCallShiftRow,
    PatientRow,
    StaffAwayRow,
)
from integrations.db.tables.policy import PolicyProposalRow

__all__ = [
    "AuditAnchorRow",
    "AuditChainRow",
    "AuditEventRow",
    "BreakGlassReviewRow",
    "BreakGlassSessionRow",
    "CareTeamMemberRow",
    "CareTeamRow",
    "ComplianceGroupMemberRow",
    "ComplianceGroupRow",
    "ComplianceGroupShareRow",
    "ConsentChangeRow",
    "ConsentRow",
    "ConversationMemberRow",
    "ConversationOnCallRow",
    "ConversationReadRow",
    "ConversationRow",
    "EscalationStepRow",
    "ExternalParticipantRow",
    "IdempotencyKeyRow",
    "LegalHoldRow",
    "LoginThrottleRow",
    "MessageAttachmentRow",
    "MessageDeliveryRow",
    "MessageRecallRow",
    "MessageRow",
    "OnCallShiftRow",
    "OrganizationContactRow",
    "OrganizationRow",
    "OutboxRow",
    "Part2NoticeRow",
    "PatientRow",
    "PolicyProposalRow",
    "SmsOptOutRow",
    "StaffAwayRow",
    "UserRow",
    "WebhookEventRow",
    "metadata",
]
