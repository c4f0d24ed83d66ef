"""accounts: approval, session revocation, and the login throttle shared by every instance

- ``users.pending_approval``: a self-registered account waits for an admin's approval
  (``auth.require_approval``) before it can log in; every existing account is approved.
- ``users.sessions_valid_after``: access tokens issued before this moment are refused (logout,
  deactivation, an admin ending an account's sessions), within ``auth.account_recheck_seconds``.
- ``login_throttles``: failed logins counted per account (by the keyed hash of the email, so an
  unknown email is throttled exactly like a known one) and per source address, with the back-off
  they earned. In PostgreSQL rather than process memory so that every worker and instance sees
  the same counts.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("pending_approval", sa.Boolean(), nullable=False, server_default=sa.text("false"))
    )
    op.add_column("users", sa.Column("sessions_valid_after", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttles")),
    )
    op.create_index(
        op.f("ix_login_throttles_last_failure_at"), "login_throttles", ["last_failure_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_throttles_last_failure_at"), table_name="login_throttles")
    op.drop_table("login_throttles")
    op.drop_column("users", "sessions_valid_after")
    op.drop_column("users", "pending_approval")
