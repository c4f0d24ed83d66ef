"""Table models of the audit trail: the events, their chain, and signed anchors of the chain.

- ``audit_chain``: one row per sealed audit event, written only by the background sealer
  (``integrations.audit_sealer``). ``seq`` numbers the chain without gaps; ``digest`` is the SHA-256
  of the event's canonical content and ``hash`` links it to the previous entry (see
  ``engine.audit_chain``). The event rows themselves are never updated: the chain lives beside them,
  so ``audit_events`` stays strictly append-only. Append-only by trigger as well.
- ``audit_anchors``: signed checkpoints of the chain head (``caremsg audit anchor --store``), kept
  here for convenience; the point of an anchor is a copy kept *outside* the database. Append-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from integrations.db.columns import timestamp


class AuditEventRow(SQLModel, table=True):
    """Append-only: the migration revokes UPDATE/DELETE and installs a trigger that refuses them."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    occurred_at: datetime = timestamp()
    request_id: str | None = Field(sa_column=Column(String(64), nullable=True))
    actor_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    actor_role: str | None = Field(sa_column=Column(String(32), nullable=True))
    organization_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    source_address: str | None = Field(sa_column=Column(String(64), nullable=True))
    event: str = Field(sa_column=Column(String(40), nullable=False))
    workflow: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    resource_type: str | None = Field(sa_column=Column(String(32), nullable=True))
    resource_id: str | None = Field(sa_column=Column(String(64), nullable=True))
    patient_id: int | None = Field(sa_column=Column(Integer, nullable=True, index=True))
    decision: str | None = Field(sa_column=Column(String(8), nullable=True))
    matched_rule: str | None = Field(sa_column=Column(String(300), nullable=True))
    reason: str | None = Field(sa_column=Column(String(64), nullable=True))
    policy_version: str | None = Field(sa_column=Column(String(32), nullable=True))
    purpose: str | None = Field(sa_column=Column(String(32), nullable=True))
    break_glass: bool = Field(sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    details: dict[str, Any] = Field(
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    # Keyed hash (HMAC-SHA-256) of an identifier that must be searchable but never stored in clear,
    # such as the email of a failed login.
    subject_hash: str | None = Field(sa_column=Column(String(64), nullable=True, index=True))
    # Whether the record is one its actor was not told of (details.answered, engine.audit.ANSWERED):
    # kept by PostgreSQL for the time index (0032), never written, not part of the chained content.
    answered: bool | None = Field(
        default=None,
        sa_column=Column(Boolean, Computed("(details -> 'answered') IS NOT NULL", persisted=True)),
    )

    __table_args__ = (
        CheckConstraint("decision IS NULL OR decision IN ('allow','deny')", name="decision"),
        CheckConstraint("outcome IN ('success','denied','failure')", name="outcome"),
        # Covering: a time-range search reads whose record it is (and whether its actor was told of
        # it), and the charts what they count, from the index alone (0017, 0032).
        Index(
            "ix_audit_events_occurred_at_visible",
            "occurred_at",
            postgresql_include=[
                "id",
                "organization_id",
                "patient_id",
                "decision",
                "outcome",
                "reason",
                "workflow",
                "answered",
            ],
        ),
    )


class AuditChainRow(SQLModel, table=True):
    __tablename__ = "audit_chain"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_id: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    digest: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    sealed_at: datetime = timestamp()

    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),)


class AuditAnchorRow(SQLModel, table=True):
    __tablename__ = "audit_anchors"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    event_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    key_id: str = Field(sa_column=Column(String(32), nullable=False))
    signature: str = Field(sa_column=Column(String(128), nullable=False))
    signed_at: datetime = timestamp(default_now=False)
    created_at: datetime = timestamp()
