"""authorization_transactions.phone_opened_at: the cross-device sign-in was opened on a phone

The computer's sign-in page shows live progress (waiting → opened on the phone →
approved); this records the middle step so every instance can report it.

Revision ID: 0015_i16_phone_opened
Revises: 0014_i15_audit_chains
"""
from alembic import op
import sqlalchemy as sa
import idp.storage.models


revision = "0015_i16_phone_opened"
down_revision = "0014_i15_audit_chains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_transactions") as batch:
        batch.add_column(sa.Column("phone_opened_at", idp.storage.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("authorization_transactions") as batch:
        batch.drop_column("phone_opened_at")
