"""cross-device sessions scoped to the one authorization they were approved for

Revision ID: 0016_i10_scoped_sessions
Revises: 0015_i16_phone_opened
"""
from alembic import op
import sqlalchemy as sa


revision = "0016_i10_scoped_sessions"
down_revision = "0015_i16_phone_opened"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope_txn", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.drop_column("scope_txn")
