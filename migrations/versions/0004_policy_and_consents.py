"""consent lifecycle, consent index sequence, break-the-glass (issue 4)

- consents.scope: which data and actions a consent discloses (existing consents keep all three);
- external_participants.removed_at: set when the consent that let the participant in is revoked;
- consent_changes: the numbered log of consent changes the in-memory indexes follow;
- break_glass_sessions: emergency access, for compliance review.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A copy, not an import: a migration must keep meaning what it meant when it was written.
CONSENT_INDEX_KEY = (
    "coalesce(organization_id, compliance_group_id)::bigint"
    " | CASE WHEN recipient_type = 'compliance_group' THEN 2147483648 ELSE 0 END"
    " | ((CASE WHEN 'read' = ANY(scope) THEN 1 ELSE 0 END"
    " | CASE WHEN 'message' = ANY(scope) THEN 2 ELSE 0 END"
    " | CASE WHEN 'sms' = ANY(scope) THEN 4 ELSE 0 END)::bigint << 32)"
    " | ((CASE purpose WHEN 'treatment' THEN 0 WHEN 'care_coordination' THEN 1"
    " WHEN 'payment' THEN 2 ELSE 3 END)::bigint << 36)"
)


def upgrade() -> None:
    op.add_column(
        "consents",
        sa.Column(
            "scope",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{read,message,sms}'"),
            nullable=False,
        ),
    )
    op.create_check_constraint(
        op.f("ck_consents_scope"),
        "consents",
        "cardinality(scope) >= 1 AND scope <@ '{read,message,sms}'::varchar[]",
    )
    # Recipient, scope and purpose packed as the consent index keeps them (integrations/db/tables.py).
    op.add_column(
        "consents",
        sa.Column(
            "index_key", sa.BigInteger(), sa.Computed(CONSENT_INDEX_KEY, persisted=True), nullable=True
        ),
    )
    op.add_column("external_participants", sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "consent_changes",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("consent_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("op IN ('recorded','revoked')", name=op.f("ck_consent_changes_op")),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_consent_changes_consent_id_consents")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_consent_changes")),
    )
    op.create_index(op.f("ix_consent_changes_consent_id"), "consent_changes", ["consent_id"], unique=False)
    op.create_table(
        "break_glass_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "expires_at > opened_at", name=op.f("ck_break_glass_sessions_expires_after_opened")
        ),
        sa.CheckConstraint("char_length(reason) >= 10", name=op.f("ck_break_glass_sessions_reason_length")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_break_glass_sessions_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_break_glass_sessions_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_break_glass_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_sessions")),
    )
    op.create_index(
        op.f("ix_break_glass_sessions_organization_id"),
        "break_glass_sessions",
        ["organization_id"],
        unique=False,
    )
    op.create_index(
        "ix_break_glass_sessions_user_patient",
        "break_glass_sessions",
        ["user_id", "patient_id", "expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_break_glass_sessions_user_patient", table_name="break_glass_sessions")
    op.drop_index(op.f("ix_break_glass_sessions_organization_id"), table_name="break_glass_sessions")
    op.drop_table("break_glass_sessions")
    op.drop_index(op.f("ix_consent_changes_consent_id"), table_name="consent_changes")
    op.drop_table("consent_changes")
    op.drop_column("external_participants", "removed_at")
    op.drop_column("consents", "index_key")
    op.drop_constraint(op.f("ck_consents_scope"), "consents", type_="check")
    op.drop_column("consents", "scope")
