"""audit log as several hash chains (chain, seq) with archive checkpoints

Revision ID: 0014_i15_audit_chains
Revises: 0013_i13_dpop

The primary key changes from ``seq`` to ``(chain, seq)``; existing entries become chain 0
unchanged (their hashes do not cover the chain number), so an existing log still verifies.
The table is rebuilt (copy, drop, rename), which works alike on SQLite and PostgreSQL.
"""
from alembic import op
import sqlalchemy as sa
import idp.storage.models


revision = "0014_i15_audit_chains"
down_revision = "0013_i13_dpop"
branch_labels = None
depends_on = None

COLUMNS = "seq, at, event, data, prev_hash, entry_hash"


def _audit_table(name: str, with_chain: bool) -> None:
    columns = [sa.Column("chain", sa.Integer(), nullable=False, server_default="0")] if with_chain else []
    key = ["chain", "seq"] if with_chain else ["seq"]
    op.create_table(
        name,
        *columns,
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=48), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
    )


def upgrade() -> None:
    _audit_table("audit_log_chains", with_chain=True)
    op.execute(f"INSERT INTO audit_log_chains (chain, {COLUMNS}) SELECT 0, {COLUMNS} FROM audit_log")
    op.drop_table("audit_log")
    op.rename_table("audit_log_chains", "audit_log")
    op.create_table(
        "audit_checkpoints",
        sa.Column("chain", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("archived_at", idp.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    _audit_table("audit_log_single", with_chain=False)
    op.execute(f"INSERT INTO audit_log_single ({COLUMNS}) SELECT {COLUMNS} FROM audit_log WHERE chain = 0")
    op.drop_table("audit_log")
    op.rename_table("audit_log_single", "audit_log")
