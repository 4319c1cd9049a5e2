"""Regime rows: idempotent inserts and the reads the server and the pipeline need."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import cast

from sqlalchemy import Connection, Row, Table, select
from sqlalchemy.dialects.postgresql import insert

from bloasis.regime.types import OVERRIDE_SUFFIX, RegimeResult
from bloasis.store.models import RegimeRow

_T = cast(Table, RegimeRow.__table__)
_COLS = (
    "as_of",
    "regime",
    "confidence",
    "risk_level",
    "trigger",
    "reasoning",
    "indicators",
    "model_version",
    "run_id",
    "computed_at",
)


def _from_row(row: Row[tuple[object, ...]]) -> RegimeResult:
    return RegimeResult(**{c: getattr(row, c) for c in _COLS})


def insert_regimes(conn: Connection, results: Sequence[RegimeResult]) -> list[date]:
    """Insert results; rows whose (model_version, as_of) exist are left as they are.

    Returns the as-of dates actually inserted, so callers emit events only for new rows.
    """
    inserted: list[date] = []
    # PostgreSQL allows 65535 bind parameters per statement: 10 columns x 5000 rows fits.
    for i in range(0, len(results), 5000):
        stmt = (
            insert(_T)
            .values([{c: getattr(r, c) for c in _COLS} for r in results[i : i + 5000]])
            .on_conflict_do_nothing(constraint="uq_regimes_model_as_of")
            .returning(_T.c.as_of)
        )
        inserted.extend(d for (d,) in conn.execute(stmt))
    return sorted(inserted)


def regime_at(conn: Connection, model_version: str, as_of: date) -> RegimeResult | None:
    row = conn.execute(
        select(*(_T.c[c] for c in _COLS)).where(
            _T.c.model_version == model_version, _T.c.as_of == as_of
        )
    ).first()
    return _from_row(row) if row else None


def previous_regime(conn: Connection, model_version: str, before: date) -> RegimeResult | None:
    """The latest persisted regime with an as-of date strictly before `before`."""
    row = conn.execute(
        select(*(_T.c[c] for c in _COLS))
        .where(_T.c.model_version == model_version, _T.c.as_of < before)
        .order_by(_T.c.as_of.desc())
        .limit(1)
    ).first()
    return _from_row(row) if row else None


def latest_regime(conn: Connection, model_version: str) -> RegimeResult | None:
    """What "current" means: the regime with the latest as-of date stored."""
    row = conn.execute(
        select(*(_T.c[c] for c in _COLS))
        .where(_T.c.model_version == model_version)
        .order_by(_T.c.as_of.desc())
        .limit(1)
    ).first()
    return _from_row(row) if row else None


def regime_history(
    conn: Connection,
    model_version: str,
    start: date,
    end: date,
    *,
    after: date | None = None,
    limit: int = 1000,
) -> list[RegimeResult]:
    """Regimes with start <= as_of <= end (and as_of > after, for paging), oldest first."""
    q = select(*(_T.c[c] for c in _COLS)).where(
        _T.c.model_version == model_version, _T.c.as_of >= start, _T.c.as_of <= end
    )
    if after is not None:
        q = q.where(_T.c.as_of > after)
    rows = conn.execute(q.order_by(_T.c.as_of).limit(limit)).all()
    return [_from_row(r) for r in rows]


def regime_id_at(conn: Connection, model_version: str, as_of: date) -> int | None:
    """The row id strategies reference as the regime they were computed from."""
    return conn.execute(
        select(_T.c.id).where(_T.c.model_version == model_version, _T.c.as_of == as_of)
    ).scalar()


def override_version(model_version: str) -> str:
    """The model version an operator's SaveRegime is stored under, beside the computed one."""
    return model_version + OVERRIDE_SUFFIX


def current_regime(conn: Connection, model_version: str) -> RegimeResult | None:
    """What is current for a model version: its latest computed regime, or an operator
    override (SaveRegime) of the same or a later session — served until the pipeline computes
    a later session. The one definition the server and the Redis switch share."""
    computed = latest_regime(conn, model_version)
    override = latest_regime(conn, override_version(model_version))
    if override is not None and (computed is None or override.as_of >= computed.as_of):
        return override
    return computed


def save_override(conn: Connection, result: RegimeResult) -> None:
    """Store an operator override: a second SaveRegime for the same session replaces the first
    (unlike computed results, which are never rewritten)."""
    values = {c: getattr(result, c) for c in _COLS}
    stmt = insert(_T).values(values)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_regimes_model_as_of",
        set_={c: stmt.excluded[c] for c in _COLS if c not in ("model_version", "as_of")},
    )
    conn.execute(stmt)
