"""ID-token signing keys and their rotation schedule in the database, shared by every instance

Revision ID: 0018_i15_signing_keys
Revises: 0017_i15_enrolment_retry

The keys of an existing ``keys/signing/index.json`` are imported by ``idp db upgrade``,
``idp init`` and ``idp serve`` right after this migration (idp/keystore.py): importing
needs the key backend (keys folder or PKCS#11 token), which a migration does not have.
"""
from alembic import op
import sqlalchemy as sa


revision = "0018_i15_signing_keys"
down_revision = "0017_i15_enrolment_retry"
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
        sa.Column("sealed", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    schedule = op.create_table(
        "signing_key_schedule",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(schedule, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("signing_key_schedule")
    op.drop_table("signing_keys")
