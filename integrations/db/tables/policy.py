"""Table models of the policy capability: proposed edits of the policy files (four eyes).

- ``policy_proposals``: one row per proposed edit of one policy file, with the content proposed and
  the content it was based on (so the diff, and every version a file went through, can be read
  back), who proposed it and why, and how it ended: ``applied`` (approved by another compliance
  officer and written), ``rejected``, ``withdrawn`` or ``superseded``. Policy text, never PHI. The
  database itself refuses an applied row whose approver is its proposer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, Index, String, Text
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp

STATES = ("proposed", "applied", "rejected", "withdrawn", "superseded")


class PolicyProposalRow(SQLModel, table=True):
    __tablename__ = "policy_proposals"

    id: int | None = Field(default=None, primary_key=True)
    # Relative to the policy directory: roles.csv, workflows.toml, tests/default.csv, ...
    file: str = Field(sa_column=Column(String(200), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    content_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    base_content: str = Field(sa_column=Column(Text, nullable=False))
    base_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    proposed_by: int = foreign_key("users.id", index=False)
    # The proposer's organization when they proposed it (the policy may require it to be the
    # approver's: the fact own_org).
    organization_id: int = foreign_key("organizations.id", index=False)
    proposed_at: datetime = timestamp()
    state: str = Field(sa_column=Column(String(20), nullable=False, server_default="proposed"))
    # A restore: the applied proposal whose version it brings back, and which side of it.
    restores_id: int | None = foreign_key("policy_proposals.id", nullable=True, index=False)
    restores_version: str | None = Field(default=None, sa_column=Column(String(10), nullable=True))
    decided_by: int | None = foreign_key("users.id", nullable=True, index=False)
    decided_at: datetime | None = timestamp(nullable=True, default_now=False)
    decision_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    applied_version: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))

    __table_args__ = (
        CheckConstraint(f"state IN {STATES!r}".replace('"', "'"), name="state"),
        CheckConstraint("char_length(reason) BETWEEN 1 AND 2000", name="reason_length"),
        CheckConstraint(
            "(state = 'proposed') = (decided_by IS NULL AND decided_at IS NULL)", name="decided_once"
        ),
        CheckConstraint("state <> 'applied' OR decided_by <> proposed_by", name="four_eyes"),
        CheckConstraint("(state = 'applied') = (applied_version IS NOT NULL)", name="applied_version"),
        CheckConstraint(
            "(restores_id IS NULL) = (restores_version IS NULL)"
            " AND (restores_version IS NULL OR restores_version IN ('before', 'after'))",
            name="restores",
        ),
        Index("ix_policy_proposals_file_state", "file", "state"),
    )
