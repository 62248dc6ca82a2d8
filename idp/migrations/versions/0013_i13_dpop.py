"""DPoP key binding (RFC 9449): codes and tokens carry the proof key's JWK thumbprint

Revision ID: 0013_i13_dpop
Revises: 0003_i9_token_families_lockout
"""
from alembic import op
import sqlalchemy as sa


revision = "0013_i13_dpop"
down_revision = "0003_i9_token_families_lockout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("dpop_jkt")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("dpop_jkt")
