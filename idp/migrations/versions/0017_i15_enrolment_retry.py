"""enrolments remember how finish found the account, so a retried finish answers the same

Revision ID: 0017_i15_enrolment_retry
Revises: 0016_i10_scoped_sessions
"""
from alembic import op
import sqlalchemy as sa


revision = "0017_i15_enrolment_retry"
down_revision = "0016_i10_scoped_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("proof_route", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("proof_route")
