"""backtests: inputs, progress, results and daily equity curves

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    op.create_table(
        "backtests",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("inputs_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", jsonb, nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_params", jsonb, nullable=False),
        sa.Column("data_source", sa.String(length=200), nullable=False),
        sa.Column("data_snapshot_hash", sa.String(length=64), nullable=False),
        sa.Column("code_version", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.Double(), server_default=sa.text("0"), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("summary", jsonb, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("report", jsonb, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backtests_inputs_key", "backtests", ["inputs_key"])
    op.create_index(
        "uq_backtests_succeeded_key",
        "backtests",
        ["inputs_key"],
        unique=True,
        postgresql_where=sa.text("status = 'succeeded'"),
    )
    op.create_table(
        "backtest_equity",
        sa.Column("backtest_id", sa.UUID(), nullable=False),
        sa.Column("portfolio", sa.String(length=200), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("equity", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["backtest_id"], ["backtests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("backtest_id", "portfolio", "as_of"),
    )


def downgrade() -> None:
    op.drop_table("backtest_equity")
    op.drop_index("uq_backtests_succeeded_key", table_name="backtests")
    op.drop_index("ix_backtests_inputs_key", table_name="backtests")
    op.drop_table("backtests")
