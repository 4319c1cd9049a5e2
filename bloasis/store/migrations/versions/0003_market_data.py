"""market data: the point-in-time store (ingests, symbols, bar and series versions)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "md_ingests",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "params",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "result",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "md_symbols",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("sector", sa.String(length=64), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("symbol"),
    )
    op.create_table(
        "md_bars",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("session", sa.Date(), nullable=False),
        sa.Column("version", sa.SmallInteger(), nullable=False),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("adj_close", sa.Double(), nullable=False),
        sa.Column("volume", sa.Double(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ingest_id", sa.BigInteger(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ingest_id"], ["md_ingests.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["symbol_id"], ["md_symbols.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("symbol_id", "session", "version"),
    )
    op.create_index(
        "uq_md_bars_current",
        "md_bars",
        ["symbol_id", "session"],
        unique=True,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
    op.create_index(
        "ix_md_bars_revised",
        "md_bars",
        ["symbol_id", "version"],
        unique=False,
        postgresql_where=sa.text("version > 1"),
    )
    op.create_table(
        "md_series",
        sa.Column("series", sa.String(length=32), nullable=False),
        sa.Column("obs_date", sa.Date(), nullable=False),
        sa.Column("version", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ingest_id", sa.BigInteger(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ingest_id"], ["md_ingests.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("series", "obs_date", "version"),
    )
    op.create_index(
        "uq_md_series_current",
        "md_series",
        ["series", "obs_date"],
        unique=True,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_md_series_current",
        table_name="md_series",
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
    op.drop_table("md_series")
    op.drop_index(
        "ix_md_bars_revised", table_name="md_bars", postgresql_where=sa.text("version > 1")
    )
    op.drop_index(
        "uq_md_bars_current",
        table_name="md_bars",
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
    op.drop_table("md_bars")
    op.drop_table("md_symbols")
    op.drop_table("md_ingests")
