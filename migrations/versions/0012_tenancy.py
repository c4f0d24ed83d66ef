"""tenancy: compliance groups shared by name; a reply code per external participant

Compliance groups already belong to the organization that created them
(``compliance_groups.organization_id``, set from the creator's organization since 0001): that is the
owner. ``compliance_group_shares`` records the organizations an owner shared a group with; only the
owner's and those organizations' compliance officers may name the group in a consent.

``external_participants.reply_code`` tells which of a phone number's conversations an SMS reply
means (a reply starting ``#2`` goes to the participant with code 2). Codes count up per number in
order of admission and are never reused; existing rows get theirs in id order.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "compliance_group_shares",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("shared_by", sa.Integer(), nullable=False),
        sa.Column("shared_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["compliance_groups.id"],
            name=op.f("fk_compliance_group_shares_group_id_compliance_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_compliance_group_shares_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["shared_by"], ["users.id"], name=op.f("fk_compliance_group_shares_shared_by_users")
        ),
        sa.PrimaryKeyConstraint("group_id", "organization_id", name=op.f("pk_compliance_group_shares")),
    )
    op.create_index(
        op.f("ix_compliance_group_shares_organization_id"),
        "compliance_group_shares",
        ["organization_id"],
        unique=False,
    )

    op.add_column("external_participants", sa.Column("reply_code", sa.Integer(), nullable=True))
    op.execute(
        """
        UPDATE external_participants e SET reply_code = n.code
        FROM (SELECT id, row_number() OVER (PARTITION BY phone_number ORDER BY id) AS code
              FROM external_participants) n
        WHERE n.id = e.id
        """
    )
    op.alter_column("external_participants", "reply_code", nullable=False)
    op.create_unique_constraint(
        op.f("uq_external_participants_phone_number_reply_code"),
        "external_participants",
        ["phone_number", "reply_code"],
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_external_participants_phone_number_reply_code"), "external_participants", type_="unique"
    )
    op.drop_column("external_participants", "reply_code")
    op.drop_index(op.f("ix_compliance_group_shares_organization_id"), table_name="compliance_group_shares")
    op.drop_table("compliance_group_shares")
