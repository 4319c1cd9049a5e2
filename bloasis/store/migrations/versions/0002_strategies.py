"""sectors, strategies, picks, signals, users

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("risk_profile", sa.String(length=16), nullable=False),
        sa.Column("preferred_sectors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("excluded_sectors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("max_single_position", sa.Numeric(precision=6, scale=4), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "user_strategies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("profile_strategy_id", sa.String(length=200), nullable=False),
        sa.Column("preferences_version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("positions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cash_weight", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
        ),
        sa.ForeignKeyConstraint(["user_id"], ["user_preferences.user_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_version", "as_of", "user_id", name="uq_user_strategies"),
    )
    op.create_table(
        "sector_analyses",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("regime_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("candidates", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["regime_id"],
            ["regimes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_version", "as_of", name="uq_sector_analyses"),
    )
    op.create_table(
        "strategies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("strategy_id", sa.String(length=200), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("risk_profile", sa.String(length=16), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("risk_level", sa.String(length=8), nullable=False),
        sa.Column("regime_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("cash_weight", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("book", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["regime_id"],
            ["regimes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_version", "as_of", "risk_profile", name="uq_strategies"),
        sa.UniqueConstraint("strategy_id"),
    )
    op.create_table(
        "picks",
        sa.Column("strategy_pk", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("final_score", sa.Double(), nullable=False),
        sa.Column("factor_scores", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["strategy_pk"], ["strategies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("strategy_pk", "symbol"),
    )
    op.create_table(
        "sector_scores",
        sa.Column("analysis_id", sa.BigInteger(), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("tilt", sa.Double(), nullable=False),
        sa.Column("strength", sa.Double(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["analysis_id"], ["sector_analyses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("analysis_id", "sector"),
    )
    op.create_table(
        "signals",
        sa.Column("strategy_pk", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("weight", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("entry_price", sa.Numeric(), nullable=False),
        sa.Column("stop_loss", sa.Numeric(), nullable=False),
        sa.Column("profit_tiers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("trailing_stop_pct", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.ForeignKeyConstraint(["strategy_pk"], ["strategies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("strategy_pk", "symbol"),
    )


def downgrade() -> None:
    op.drop_table("signals")
    op.drop_table("sector_scores")
    op.drop_table("picks")
    op.drop_table("strategies")
    op.drop_table("sector_analyses")
    op.drop_table("user_strategies")
    op.drop_table("user_preferences")
