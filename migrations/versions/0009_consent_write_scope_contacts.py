"""consents may name scope write; organizations keep a directory of external contacts (issue 9)

- consents.scope: ``write`` (changes to the record and care team) joins read, message and sms; a
  consent without it never allows a change. The default stays read, message, sms.
- consents.index_key: packs the write bit (8) as the in-memory consent index does; a generated
  column's expression cannot be altered in place before PostgreSQL 17, so it is rebuilt.
- organization_contacts: the phone numbers an organization's admins vouch for; a consent naming
  the organization lets one of them be texted only if the number is in it.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copies, not imports: a migration must keep meaning what it meant when it was written.
_KEY_HEAD = (
    "coalesce(organization_id, compliance_group_id)::bigint"
    " | CASE WHEN recipient_type = 'compliance_group' THEN 2147483648 ELSE 0 END"
    " | ((CASE WHEN 'read' = ANY(scope) THEN 1 ELSE 0 END"
    " | CASE WHEN 'message' = ANY(scope) THEN 2 ELSE 0 END"
    " | CASE WHEN 'sms' = ANY(scope) THEN 4 ELSE 0 END"
)
_KEY_TAIL = (
    ")::bigint << 32)"
    " | ((CASE purpose WHEN 'treatment' THEN 0 WHEN 'care_coordination' THEN 1"
    " WHEN 'payment' THEN 2 ELSE 3 END)::bigint << 36)"
)
KEY_WITH_WRITE = _KEY_HEAD + " | CASE WHEN 'write' = ANY(scope) THEN 8 ELSE 0 END" + _KEY_TAIL
KEY_WITHOUT_WRITE = _KEY_HEAD + _KEY_TAIL


def _index_key(expression: str) -> None:
    op.drop_column("consents", "index_key")
    op.add_column(
        "consents",
        sa.Column("index_key", sa.BigInteger(), sa.Computed(expression, persisted=True), nullable=True),
    )


def upgrade() -> None:
    op.drop_constraint(op.f("ck_consents_scope"), "consents", type_="check")
    op.create_check_constraint(
        op.f("ck_consents_scope"),
        "consents",
        "cardinality(scope) >= 1 AND scope <@ '{read,message,sms,write}'::varchar[]",
    )
    _index_key(KEY_WITH_WRITE)
    op.create_table(
        "organization_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("phone_number", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("added_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["added_by"], ["users.id"], name=op.f("fk_organization_contacts_added_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_contacts_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_contacts")),
        sa.UniqueConstraint("organization_id", "phone_number", name="uq_organization_contacts_number"),
    )
    op.create_index(
        op.f("ix_organization_contacts_phone_number"), "organization_contacts", ["phone_number"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_organization_contacts_phone_number"), table_name="organization_contacts")
    op.drop_table("organization_contacts")
    op.execute("UPDATE consents SET scope = array_remove(scope, 'write') WHERE cardinality(scope) > 1")
    # A write-only consent has no meaning without write: it ends (never widened to read).
    op.execute(
        "UPDATE consents SET scope = '{read}', revoked_at = coalesce(revoked_at, now()),"
        " revocation_reason = coalesce(revocation_reason, 'schema downgrade: scope write removed')"
        " WHERE scope = '{write}'"
    )
    _index_key(KEY_WITHOUT_WRITE)
    op.drop_constraint(op.f("ck_consents_scope"), "consents", type_="check")
    op.create_check_constraint(
        op.f("ck_consents_scope"),
        "consents",
        "cardinality(scope) >= 1 AND scope <@ '{read,message,sms}'::varchar[]",
    )
