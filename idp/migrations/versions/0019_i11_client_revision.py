"""clients carry a revision, incremented by every change, so a process may keep a client
and have each write that relies on it check it is still current (idp/clients/cache.py)

Revision ID: 0019_i11_client_revision
Revises: 0018_i15_signing_keys
"""
from alembic import op
import sqlalchemy as sa


revision = "0019_i11_client_revision"
down_revision = "0018_i15_signing_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("revision")
