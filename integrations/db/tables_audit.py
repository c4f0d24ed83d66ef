"""Table models for the tamper-evident audit trail (issue 5).

Registered on the shared metadata by importing integrations.db.tables (Alembic sees them).

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

from sqlalchemy import BigInteger, CheckConstraint, Column, String
from sqlmodel import Field, SQLModel

from integrations.db.columns import timestamp


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
