"""PostgreSQL schema (the system of record). Migrations in bloasis/store/migrations mirror it."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PipelineRun(Base):
    """Lineage of every run: what it was asked, what data and code it saw, how it went."""

    __tablename__ = "pipeline_runs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    flow: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))
    as_of: Mapped[date | None] = mapped_column(Date)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    data_source: Mapped[str] = mapped_column(String(200), server_default="")
    data_snapshot_hash: Mapped[str] = mapped_column(String(64), server_default="")
    code_version: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    timings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RegimeRow(Base):
    __tablename__ = "regimes"
    __table_args__ = (
        # Also the index for "latest" and range reads, which filter by model version first.
        UniqueConstraint("model_version", "as_of", name="uq_regimes_model_as_of"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    as_of: Mapped[date] = mapped_column(Date)
    regime: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Double)
    risk_level: Mapped[str] = mapped_column(String(8))
    trigger: Mapped[str] = mapped_column(String(32))
    reasoning: Mapped[str] = mapped_column(Text)
    indicators: Mapped[dict[str, Any]] = mapped_column(JSONB)
    model_version: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("pipeline_runs.id", ondelete="RESTRICT")
    )
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(Base):
    """Events written in the same transaction as the results they describe; a relay sends them."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


class SectorAnalysisRow(Base):
    """Tier 2 per as-of: the candidates; its 11 sector scores are in sector_scores."""

    __tablename__ = "sector_analyses"
    __table_args__ = (UniqueConstraint("model_version", "as_of", name="uq_sector_analyses"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    as_of: Mapped[date] = mapped_column(Date)
    model_version: Mapped[str] = mapped_column(String(128))
    regime: Mapped[str] = mapped_column(String(16))
    regime_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("regimes.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("pipeline_runs.id"))
    candidates: Mapped[list[str]] = mapped_column(JSONB)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SectorScoreRow(Base):
    __tablename__ = "sector_scores"

    analysis_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sector_analyses.id", ondelete="CASCADE"), primary_key=True
    )
    sector: Mapped[str] = mapped_column(String(64), primary_key=True)
    score: Mapped[float] = mapped_column(Double)
    tilt: Mapped[float] = mapped_column(Double)
    strength: Mapped[float] = mapped_column(Double)
    members: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    selected: Mapped[bool] = mapped_column(Boolean)


class StrategyRow(Base):
    """A risk profile's strategy per as-of; `book` keeps the ranked candidates beyond the top N
    with their price levels, which user strategies derive from."""

    __tablename__ = "strategies"
    __table_args__ = (
        UniqueConstraint("model_version", "as_of", "risk_profile", name="uq_strategies"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(String(200), unique=True)
    as_of: Mapped[date] = mapped_column(Date)
    model_version: Mapped[str] = mapped_column(String(128))
    risk_profile: Mapped[str] = mapped_column(String(16))
    regime: Mapped[str] = mapped_column(String(16))
    risk_level: Mapped[str] = mapped_column(String(8))
    regime_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("regimes.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("pipeline_runs.id"))
    cash_weight: Mapped[Decimal] = mapped_column(Numeric(10, 4))
    rationale: Mapped[str] = mapped_column(Text)
    book: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PickRow(Base):
    __tablename__ = "picks"

    strategy_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    sector: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    final_score: Mapped[float] = mapped_column(Double)
    factor_scores: Mapped[dict[str, float]] = mapped_column(JSONB)
    rationale: Mapped[str] = mapped_column(Text)


class SignalRow(Base):
    __tablename__ = "signals"

    strategy_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    sector: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))
    weight: Mapped[Decimal] = mapped_column(Numeric(10, 4))
    entry_price: Mapped[Decimal] = mapped_column(Numeric)  # no fixed scale: "38.34" stays
    stop_loss: Mapped[Decimal] = mapped_column(Numeric)
    profit_tiers: Mapped[list[dict[str, str]]] = mapped_column(JSONB)
    trailing_stop_pct: Mapped[Decimal] = mapped_column(Numeric(10, 4))


class UserPreferencesRow(Base):
    __tablename__ = "user_preferences"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    risk_profile: Mapped[str] = mapped_column(String(16))
    preferred_sectors: Mapped[list[str]] = mapped_column(JSONB)
    excluded_sectors: Mapped[list[str]] = mapped_column(JSONB)
    max_single_position: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    # Bumped by every update: a user strategy computed from older preferences is recomputed.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class UserStrategyRow(Base):
    """A user's strategy, compact: their positions (symbol, sector, action, weight); the price
    levels are those of the profile strategy it derives from."""

    __tablename__ = "user_strategies"
    __table_args__ = (
        UniqueConstraint("model_version", "as_of", "user_id", name="uq_user_strategies"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("user_preferences.user_id", ondelete="CASCADE")
    )
    as_of: Mapped[date] = mapped_column(Date)
    model_version: Mapped[str] = mapped_column(String(128))
    profile_strategy_id: Mapped[str] = mapped_column(String(200))
    preferences_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("pipeline_runs.id"))
    positions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    cash_weight: Mapped[Decimal] = mapped_column(Numeric(10, 4))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- market data: a point-in-time store (bloasis.store.marketdata) ------------------------------


class MarketIngestRow(Base):
    """One load into the market-data store: a vintage (history loaded after the fact) or a live
    daily/catch-up ingest. Every stored version points at the ingest that first saw it."""

    __tablename__ = "md_ingests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # vintage | live
    source: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)


class MarketSymbolRow(Base):
    __tablename__ = "md_symbols"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    symbol: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # index | stock
    name: Mapped[str | None] = mapped_column(Text)
    sector: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class MarketBarRow(Base):
    """Every version of every daily bar. Prices are NOT NULL (NaN = unknown) so that rows are
    fixed-width and a binary COPY parses as one numpy record dtype."""

    __tablename__ = "md_bars"
    __table_args__ = (
        # The current version of each (symbol, session): what writes compare against.
        Index(
            "uq_md_bars_current",
            "symbol_id",
            "session",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
        ),
        # Revised values only (few): `last_dates` counts versions without a full scan.
        Index("ix_md_bars_revised", "symbol_id", "version", postgresql_where=text("version > 1")),
    )

    symbol_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("md_symbols.id", ondelete="RESTRICT"), primary_key=True
    )
    session: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # 1 = first seen
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    adj_close: Mapped[float] = mapped_column(Double)
    volume: Mapped[float] = mapped_column(Double)
    source: Mapped[str] = mapped_column(String(32))
    ingest_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("md_ingests.id", ondelete="RESTRICT")
    )
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MarketSeriesRow(Base):
    """Every version of every observation of a market series (VIX, yields, credit spread)."""

    __tablename__ = "md_series"
    __table_args__ = (
        Index(
            "uq_md_series_current",
            "series",
            "obs_date",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
        ),
    )

    series: Mapped[str] = mapped_column(String(32), primary_key=True)
    obs_date: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    source: Mapped[str] = mapped_column(String(32))
    ingest_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("md_ingests.id", ondelete="RESTRICT")
    )
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BacktestRow(Base):
    """One backtest: its inputs (spec, model, data snapshot, code), progress and result.
    A succeeded one is unique per inputs key: a rerun with the same inputs finds it."""

    __tablename__ = "backtests"
    __table_args__ = (
        Index(
            "uq_backtests_succeeded_key",
            "inputs_key",
            unique=True,
            postgresql_where=text("status = 'succeeded'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    inputs_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    model_version: Mapped[str] = mapped_column(String(64))
    model_params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    data_source: Mapped[str] = mapped_column(String(200))
    data_snapshot_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Double, server_default=text("0"))
    message: Mapped[str] = mapped_column(Text, server_default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Every progress write moves it: a running row it stopped moving on was abandoned.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BacktestEquityRow(Base):
    """A backtest's daily equity curves: its portfolios and the benchmarks."""

    __tablename__ = "backtest_equity"

    backtest_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("backtests.id", ondelete="CASCADE"), primary_key=True
    )
    portfolio: Mapped[str] = mapped_column(String(200), primary_key=True)
    as_of: Mapped[date] = mapped_column(Date, primary_key=True)
    equity: Mapped[float] = mapped_column(Double)
