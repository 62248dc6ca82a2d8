"""registration authority: initial access tokens bound to a category; disabled clients

Revision ID: 0002_i12_registration_authority
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import idp.storage.models


revision = "0002_i12_registration_authority"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "initial_access_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("rp_category", sa.String(length=16), nullable=False),
        sa.Column("created_at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idp.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("uses_left", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", idp.storage.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
    op.drop_table("initial_access_tokens")
