"""policy_proposals: edits of the policy files proposed in the console, applied with four eyes

A compliance officer proposes new content for one policy file with a reason; a second compliance
officer approves it, and only then is the file written and reloaded (``policy.propose``,
``policy.restore``, ``policy.approve``, ``policy.reject``, ``policy.withdraw``). Each row keeps the
content proposed and the content it was based on (and their SHA-256), so the diff and every version
a file went through can be read back, and a proposal whose base is no longer the live file is known
to be stale. The state moves once from ``proposed`` to ``applied``, ``rejected``, ``withdrawn`` or
``superseded``, with who decided and when; an applied row's approver is never its proposer (the
policy decides that, and this check holds it in the database too).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "policy_proposals"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(length=200), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("base_content", sa.Text(), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="proposed", nullable=False),
        sa.Column("restores_id", sa.Integer(), nullable=True),
        sa.Column("restores_version", sa.String(length=10), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("applied_version", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "state IN ('proposed', 'applied', 'rejected', 'withdrawn', 'superseded')",
            name=op.f("ck_policy_proposals_state"),
        ),
        sa.CheckConstraint("char_length(reason) BETWEEN 1 AND 2000", name=op.f("ck_policy_proposals_reason_length")),
        sa.CheckConstraint(
            "(state = 'proposed') = (decided_by IS NULL AND decided_at IS NULL)",
            name=op.f("ck_policy_proposals_decided_once"),
        ),
        sa.CheckConstraint(
            "state <> 'applied' OR decided_by <> proposed_by", name=op.f("ck_policy_proposals_four_eyes")
        ),
        sa.CheckConstraint(
            "(state = 'applied') = (applied_version IS NOT NULL)", name=op.f("ck_policy_proposals_applied_version")
        ),
        sa.CheckConstraint(
            "(restores_id IS NULL) = (restores_version IS NULL)"
            " AND (restores_version IS NULL OR restores_version IN ('before', 'after'))",
            name=op.f("ck_policy_proposals_restores"),
        ),
        sa.ForeignKeyConstraint(["proposed_by"], ["users.id"], name=op.f("fk_policy_proposals_proposed_by_users")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_policy_proposals_organization_id_organizations")
        ),
        sa.ForeignKeyConstraint(["decided_by"], ["users.id"], name=op.f("fk_policy_proposals_decided_by_users")),
        sa.ForeignKeyConstraint(
            ["restores_id"], ["policy_proposals.id"], name=op.f("fk_policy_proposals_restores_id_policy_proposals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_proposals")),
    )
    op.create_index("ix_policy_proposals_file_state", TABLE, ["file", "state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_policy_proposals_file_state", table_name=TABLE)
    op.drop_table(TABLE)
