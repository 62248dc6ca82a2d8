"""token families by device, lock-out per credential and client address

Revision ID: 0003_i9_token_families_lockout
Revises: 0002_i12_registration_authority
"""
from alembic import op
import sqlalchemy as sa
import idp.storage.models


revision = "0003_i9_token_families_lockout"
down_revision = "0002_i12_registration_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("device_serial", sa.String(length=42), nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("device_serial", sa.String(length=42), nullable=True))
        batch.create_index("ix_tokens_device_serial", ["device_serial"])
    op.create_table(
        "credential_lockouts",
        sa.Column("device_serial", sa.String(length=42), sa.ForeignKey("device_certificates.serial"),
                  nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("lock_count", sa.Integer(), nullable=False),
        sa.Column("locked_until", idp.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_serial", "address"),
    )


def downgrade() -> None:
    op.drop_table("credential_lockouts")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index("ix_tokens_device_serial")
        batch.drop_column("device_serial")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("device_serial")
