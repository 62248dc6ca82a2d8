"""published signing keys and their rotation schedule, shared by every instance

Revision ID: 0016_i15_signing_keys
Revises: 0015_i16_phone_opened
"""
from alembic import op
import sqlalchemy as sa


revision = "0016_i15_signing_keys"
down_revision = "0015_i16_phone_opened"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("use_after", sa.BigInteger(), nullable=False),
        sa.Column("retire_after", sa.BigInteger(), nullable=True),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
