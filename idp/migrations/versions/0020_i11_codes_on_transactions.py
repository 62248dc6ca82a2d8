"""an authorization code is its transaction's outcome: kept on the transaction's row, written by
the same compare-and-set that completes it (idp/oidc/codes.py); the authorization_codes table goes

Revision ID: 0020_i11_codes_on_transactions
Revises: 0019_i11_client_revision

Codes live 60 seconds: one issued by the old version just before the upgrade cannot be
exchanged after it (the client gets ``invalid_grant`` and starts a new login).
"""
from alembic import op
import sqlalchemy as sa

import idp.storage.models


revision = "0020_i11_codes_on_transactions"
down_revision = "0019_i11_client_revision"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("code_expires_at", idp.storage.models.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("code_used_at", idp.storage.models.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("code_session_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_authorization_transactions_code_hash", ["code_hash"], unique=True)
    op.drop_table("authorization_codes")


def downgrade() -> None:
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=True),
        sa.Column("claims", sa.JSON(), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("auth_time", sa.BigInteger(), nullable=False),
        sa.Column("acr", sa.String(length=64), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("created_at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", idp.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("device_serial", sa.String(length=42), nullable=True),
        sa.Column("dpop_jkt", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["client_id"], ["clients.client_id"]),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    with op.batch_alter_table("authorization_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_authorization_transactions_code_hash")
        batch_op.drop_column("code_session_id")
        batch_op.drop_column("code_used_at")
        batch_op.drop_column("code_expires_at")
        batch_op.drop_column("code_hash")
