"""Tier 2 and tier 3 rows: sector analyses, profile strategies (with picks, signals and the
ranked book users derive from), user preferences and compact user strategies.

Inserts are idempotent on their natural keys; user strategies are recomputed when the
preferences they were computed from have changed (a higher preferences version).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, func, select, text
from sqlalchemy.dialects.postgresql import insert

from bloasis.store.models import (
    PickRow,
    SectorAnalysisRow,
    SectorScoreRow,
    SignalRow,
    StrategyRow,
    UserPreferencesRow,
    UserStrategyRow,
)
from bloasis.strategy.types import (
    Pick,
    ProfitTier,
    SectorAnalysis,
    SectorScore,
    Signal,
    Strategy,
    UserPreferences,
)

_SA = cast(Table, SectorAnalysisRow.__table__)
_SS = cast(Table, SectorScoreRow.__table__)
_ST = cast(Table, StrategyRow.__table__)
_PK = cast(Table, PickRow.__table__)
_SG = cast(Table, SignalRow.__table__)
_UP = cast(Table, UserPreferencesRow.__table__)
_US = cast(Table, UserStrategyRow.__table__)


def _at_or_latest(q: Select[Any], table: Table, as_of: date | None) -> Select[Any]:
    """Rows for `as_of`, or the one with the latest as-of when None."""
    if as_of:
        return q.where(table.c.as_of == as_of)
    return q.order_by(table.c.as_of.desc()).limit(1)


@dataclass(frozen=True)
class Stored:
    """Where a stored result came from."""

    run_id: uuid.UUID
    model_version: str
    computed_at: datetime
    regime_id: int


# --- sector analyses ---------------------------------------------------------------------------
def insert_sector_analysis(
    conn: Connection,
    a: SectorAnalysis,
    *,
    model_version: str,
    regime_id: int,
    run_id: uuid.UUID,
    computed_at: datetime,
) -> bool:
    pk = conn.execute(
        insert(_SA)
        .values(
            as_of=a.as_of,
            model_version=model_version,
            regime=a.regime,
            regime_id=regime_id,
            run_id=run_id,
            candidates=list(a.candidates),
            computed_at=computed_at,
        )
        .on_conflict_do_nothing(constraint="uq_sector_analyses")
        .returning(_SA.c.id)
    ).scalar()
    if pk is None:
        return False
    conn.execute(
        insert(_SS),
        [
            {
                "analysis_id": pk,
                "sector": s.sector,
                "score": s.score,
                "tilt": s.tilt,
                "strength": s.strength,
                "members": s.members,
                "rank": s.rank,
                "selected": s.selected,
            }
            for s in a.scores
        ],
    )
    return True


def get_sector_analysis(
    conn: Connection, model_version: str, as_of: date | None = None
) -> tuple[SectorAnalysis, Stored] | None:
    """The analysis for `as_of`, or the latest stored when None."""
    q = select(_SA).where(_SA.c.model_version == model_version)
    q = _at_or_latest(q, _SA, as_of)
    row = conn.execute(q).first()
    if row is None:
        return None
    scores = conn.execute(select(_SS).where(_SS.c.analysis_id == row.id).order_by(_SS.c.rank)).all()
    analysis = SectorAnalysis(
        as_of=row.as_of,
        regime=row.regime,
        scores=tuple(
            SectorScore(s.sector, s.score, s.tilt, s.strength, s.members, s.rank, s.selected)
            for s in scores
        ),
        candidates=tuple(row.candidates),
    )
    return analysis, Stored(row.run_id, row.model_version, row.computed_at, row.regime_id)


# --- profile strategies ------------------------------------------------------------------------
def book_entry(pick: Pick, signal: Signal) -> dict[str, Any]:
    """One ranked candidate as stored in a profile strategy's book (weight-free)."""
    return {
        "symbol": pick.symbol,
        "sector": pick.sector,
        "rank": pick.rank,
        "final_score": pick.final_score,
        "factor_scores": pick.factor_scores,
        "rationale": pick.rationale,
        "action": signal.action,
        "entry_price": str(signal.entry_price),
        "stop_loss": str(signal.stop_loss),
        "profit_tiers": [
            {"level": str(t.level), "size_pct": str(t.size_pct)} for t in signal.profit_tiers
        ],
        "trailing_stop_pct": str(signal.trailing_stop_pct),
    }


def _tiers(raw: Iterable[dict[str, str]]) -> tuple[ProfitTier, ...]:
    return tuple(ProfitTier(Decimal(t["level"]), Decimal(t["size_pct"])) for t in raw)


def insert_profile_strategy(
    conn: Connection,
    s: Strategy,
    book: Sequence[dict[str, Any]],
    *,
    model_version: str,
    regime_id: int,
    run_id: uuid.UUID,
    computed_at: datetime,
) -> bool:
    pk = conn.execute(
        insert(_ST)
        .values(
            strategy_id=s.strategy_id,
            as_of=s.as_of,
            model_version=model_version,
            risk_profile=s.risk_profile,
            regime=s.regime,
            risk_level=s.risk_level,
            regime_id=regime_id,
            run_id=run_id,
            cash_weight=s.cash_weight,
            rationale=s.rationale,
            book=list(book),
            computed_at=computed_at,
        )
        .on_conflict_do_nothing()
        .returning(_ST.c.id)
    ).scalar()
    if pk is None:
        return False
    if s.picks:
        conn.execute(
            insert(_PK),
            [
                {
                    "strategy_pk": pk,
                    "symbol": p.symbol,
                    "sector": p.sector,
                    "rank": p.rank,
                    "final_score": p.final_score,
                    "factor_scores": p.factor_scores,
                    "rationale": p.rationale,
                }
                for p in s.picks
            ],
        )
    if s.signals:
        conn.execute(
            insert(_SG),
            [
                {
                    "strategy_pk": pk,
                    "symbol": g.symbol,
                    "sector": g.sector,
                    "action": g.action,
                    "weight": g.weight,
                    "entry_price": g.entry_price,
                    "stop_loss": g.stop_loss,
                    "profit_tiers": [
                        {"level": str(t.level), "size_pct": str(t.size_pct)} for t in g.profit_tiers
                    ],
                    "trailing_stop_pct": g.trailing_stop_pct,
                }
                for g in s.signals
            ],
        )
    return True


def get_stored_book(
    conn: Connection, *, strategy_id: str, model_version: str
) -> list[dict[str, Any]] | None:
    """The ranked book stored under `strategy_id`, as users are expanded with it."""
    row = conn.execute(
        select(_ST.c.book).where(
            _ST.c.strategy_id == strategy_id, _ST.c.model_version == model_version
        )
    ).first()
    return None if row is None else list(row.book)


def get_profile_strategy(
    conn: Connection, model_version: str, profile: str, as_of: date | None = None
) -> tuple[Strategy, list[dict[str, Any]], Stored] | None:
    """(strategy, book, provenance) for `as_of`, or the latest stored when None."""
    q = select(_ST).where(_ST.c.model_version == model_version, _ST.c.risk_profile == profile)
    q = _at_or_latest(q, _ST, as_of)
    row = conn.execute(q).first()
    if row is None:
        return None
    picks = conn.execute(select(_PK).where(_PK.c.strategy_pk == row.id).order_by(_PK.c.rank)).all()
    order = {p.symbol: p.rank for p in picks}
    sigs = sorted(
        conn.execute(select(_SG).where(_SG.c.strategy_pk == row.id)).all(),
        key=lambda g: (order.get(g.symbol, 10**9), g.symbol),
    )
    strategy = Strategy(
        strategy_id=row.strategy_id,
        as_of=row.as_of,
        risk_profile=row.risk_profile,
        user_id=None,
        regime=row.regime,
        risk_level=row.risk_level,
        picks=tuple(
            Pick(p.symbol, p.sector, p.rank, p.final_score, dict(p.factor_scores), p.rationale)
            for p in picks
        ),
        signals=tuple(
            Signal(
                g.symbol,
                g.sector,
                g.action,
                g.weight,
                g.entry_price,
                g.stop_loss,
                _tiers(g.profit_tiers),
                g.trailing_stop_pct,
            )
            for g in sigs
        ),
        cash_weight=row.cash_weight,
        rationale=row.rationale,
    )
    return (
        strategy,
        list(row.book),
        Stored(row.run_id, row.model_version, row.computed_at, row.regime_id),
    )


def latest_strategy_as_of(conn: Connection, model_version: str) -> date | None:
    return cast(
        date | None,
        conn.execute(
            select(func.max(_ST.c.as_of)).where(_ST.c.model_version == model_version)
        ).scalar(),
    )


# --- user preferences --------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredPreferences:
    prefs: UserPreferences
    version: int
    updated_at: datetime


def _prefs(row: Any) -> StoredPreferences:
    return StoredPreferences(
        UserPreferences(
            user_id=row.user_id,
            risk_profile=row.risk_profile,
            preferred_sectors=tuple(row.preferred_sectors),
            excluded_sectors=tuple(row.excluded_sectors),
            max_single_position=row.max_single_position,
        ),
        row.version,
        row.updated_at,
    )


def upsert_preferences(conn: Connection, p: UserPreferences) -> StoredPreferences:
    """Create or replace; every write bumps the version so the next run recomputes the user."""
    now = datetime.now(UTC)
    values = {
        "user_id": p.user_id,
        "risk_profile": p.risk_profile,
        "preferred_sectors": list(p.preferred_sectors),
        "excluded_sectors": list(p.excluded_sectors),
        "max_single_position": p.max_single_position,
        "updated_at": now,
    }
    stmt = (
        insert(_UP)
        .values(**values, version=1)
        .on_conflict_do_update(
            index_elements=["user_id"], set_={**values, "version": _UP.c.version + 1}
        )
        .returning(*_UP.c)
    )
    return _prefs(conn.execute(stmt).one())


def get_preferences(conn: Connection, user_id: str) -> StoredPreferences | None:
    row = conn.execute(select(_UP).where(_UP.c.user_id == user_id)).first()
    return _prefs(row) if row else None


def list_preferences(
    conn: Connection,
    user_ids: Sequence[str] | None = None,
    *,
    first: str | None = None,
    before: str | None = None,
) -> list[StoredPreferences]:
    """Users in id order: those of `user_ids`, or with ids in [first, before) (None: open)."""
    q = select(_UP).order_by(_UP.c.user_id)
    if user_ids is not None:
        q = q.where(_UP.c.user_id.in_(list(user_ids)))
    if first is not None:
        q = q.where(_UP.c.user_id >= first)
    if before is not None:
        q = q.where(_UP.c.user_id < before)
    return [_prefs(r) for r in conn.execute(q)]


def user_id_boundaries(conn: Connection, every: int) -> list[str]:
    """The first user id of each run of `every` users in id order (the first id first): the
    slices a daily run derives, read without loading the users (one index-only scan)."""
    rows = conn.execute(
        text(
            "SELECT user_id FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n "
            "FROM user_preferences) t WHERE (n - 1) % :every = 0 ORDER BY user_id"
        ),
        {"every": every},
    )
    return [r[0] for r in rows]


def known_users(conn: Connection, user_ids: Sequence[str]) -> set[str]:
    rows = conn.execute(select(_UP.c.user_id).where(_UP.c.user_id.in_(list(user_ids))))
    return {r[0] for r in rows}


def count_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(_UP)).scalar_one())


def copy_preferences(conn: Connection, prefs: Sequence[UserPreferences]) -> int:
    """Bulk-load many users (COPY into a staging table, then insert the new ones)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_prefs (user_id text, risk_profile text, "
            "preferred_sectors jsonb, excluded_sectors jsonb, max_single_position numeric) "
            "ON COMMIT DROP"
        )
        # Called twice in one transaction, the staging table is still there: empty it.
        cur.execute("TRUNCATE stage_prefs")
        with cur.copy("COPY stage_prefs FROM STDIN") as copy:
            for p in prefs:
                copy.write_row(
                    (
                        p.user_id,
                        p.risk_profile,
                        json.dumps(list(p.preferred_sectors)),
                        json.dumps(list(p.excluded_sectors)),
                        str(p.max_single_position),
                    )
                )
        cur.execute(
            "INSERT INTO user_preferences (user_id, risk_profile, preferred_sectors, "
            "excluded_sectors, max_single_position) SELECT * FROM stage_prefs "
            "ON CONFLICT (user_id) DO NOTHING"
        )
        return int(cur.rowcount)


# --- user strategies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserStrategyRecord:
    user_id: str
    as_of: date
    model_version: str
    profile_strategy_id: str
    preferences_version: int
    run_id: uuid.UUID
    positions: list[dict[str, Any]]  # symbol, sector, action, weight (decimal str), rank, score
    cash_weight: Decimal
    computed_at: datetime


def upsert_user_strategies(conn: Connection, records: Sequence[UserStrategyRecord]) -> set[str]:
    """Insert new user strategies and replace those computed from older preferences; returns
    the user ids written (so events go out only for those). COPY keeps 100k users cheap."""
    if not records:
        return set()
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_us (user_id text, as_of date, "
            "model_version text, profile_strategy_id text, preferences_version int, "
            "run_id uuid, positions jsonb, "
            "cash_weight numeric, computed_at timestamptz) ON COMMIT DROP"
        )
        # Called twice in one transaction, the staging table is still there: empty it.
        cur.execute("TRUNCATE stage_us")
        memo: dict[int, str] = {}  # positions lists shared by equal users: dump once
        with cur.copy("COPY stage_us FROM STDIN") as copy:
            for r in records:
                positions = memo.get(id(r.positions))
                if positions is None:
                    positions = memo[id(r.positions)] = json.dumps(
                        r.positions, separators=(",", ":")
                    )
                copy.write_row(
                    (
                        r.user_id,
                        r.as_of,
                        r.model_version,
                        r.profile_strategy_id,
                        r.preferences_version,
                        r.run_id,
                        positions,
                        str(r.cash_weight),
                        r.computed_at,
                    )
                )
        cur.execute(
            "INSERT INTO user_strategies (user_id, as_of, model_version, profile_strategy_id, "
            "preferences_version, run_id, positions, cash_weight, computed_at) "
            "SELECT * FROM stage_us "
            "ON CONFLICT ON CONSTRAINT uq_user_strategies DO UPDATE SET "
            "profile_strategy_id = EXCLUDED.profile_strategy_id, "
            "preferences_version = EXCLUDED.preferences_version, run_id = EXCLUDED.run_id, "
            "positions = EXCLUDED.positions, cash_weight = EXCLUDED.cash_weight, "
            "computed_at = EXCLUDED.computed_at "
            "WHERE user_strategies.preferences_version < EXCLUDED.preferences_version "
            "RETURNING user_id"
        )
        written = {row[0] for row in cur.fetchall()}
    return written


def get_user_strategy(
    conn: Connection, model_version: str, user_id: str, as_of: date | None = None
) -> UserStrategyRecord | None:
    q = select(_US).where(_US.c.model_version == model_version, _US.c.user_id == user_id)
    q = _at_or_latest(q, _US, as_of)
    row = conn.execute(q).first()
    if row is None:
        return None
    return UserStrategyRecord(
        row.user_id,
        row.as_of,
        row.model_version,
        row.profile_strategy_id,
        row.preferences_version,
        row.run_id,
        list(row.positions),
        row.cash_weight,
        row.computed_at,
    )


def user_provenance(
    conn: Connection, model_version: str, as_of: date, user_ids: Sequence[str] | None = None
) -> dict[str, tuple[uuid.UUID, datetime]]:
    """user id -> (run id, computed at) of the user strategies stored for an as-of date (of
    `user_ids` only, when given)."""
    q = select(_US.c.user_id, _US.c.run_id, _US.c.computed_at).where(
        _US.c.model_version == model_version, _US.c.as_of == as_of
    )
    if user_ids is not None:
        q = q.where(_US.c.user_id.in_(list(user_ids)))
    rows = conn.execute(q)
    return {r.user_id: (r.run_id, r.computed_at) for r in rows}
