"""Backtests in PostgreSQL: a row per backtest (inputs, progress, result) and its daily equity
curves (written with COPY: a thousand users' ten years are millions of rows)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Engine, Table, insert, select, update

from bloasis.store.models import BacktestEquityRow, BacktestRow

_BT = cast(Table, BacktestRow.__table__)
_EQ = cast(Table, BacktestEquityRow.__table__)


@dataclass(frozen=True)
class StoredBacktest:
    id: uuid.UUID
    inputs_key: str
    status: str  # running | succeeded | failed
    spec: dict[str, Any]
    model_version: str
    data_snapshot_hash: str
    progress: float
    message: str
    summary: dict[str, Any]
    report: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def names(self) -> list[str]:
        """The portfolios then the benchmarks, in the results' order (none until it succeeds)."""
        return list(self.report.get("names") or self.summary)


# A running backtest writes progress at least once a wave of decisions (seconds apart); one
# silent this long died with its process (a server or flow stopped) and is reported failed.
ABANDONED_AFTER = timedelta(minutes=15)


def _row(r: Any) -> StoredBacktest:
    status, error = r.status, r.error
    if status == "running" and datetime.now(UTC) - r.updated_at > ABANDONED_AFTER:
        status = "failed"
        error = f"abandoned: no progress since {r.updated_at.isoformat()} (its process stopped)"
    return StoredBacktest(
        r.id, r.inputs_key, status, dict(r.spec), r.model_version, r.data_snapshot_hash,
        float(r.progress), r.message, dict(r.summary), dict(r.report), error, r.created_at,
        r.finished_at,
    )  # fmt: skip


def create(
    conn: Connection,
    *,
    backtest_id: uuid.UUID,
    inputs_key: str,
    spec: dict[str, Any],
    model_version: str,
    model_params: dict[str, Any],
    data_source: str,
    data_snapshot_hash: str,
    code_version: str,
) -> None:
    conn.execute(
        insert(_BT).values(
            id=backtest_id,
            inputs_key=inputs_key,
            status="running",
            spec=spec,
            model_version=model_version,
            model_params=model_params,
            data_source=data_source,
            data_snapshot_hash=data_snapshot_hash,
            code_version=code_version,
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
    )


def find_succeeded(conn: Connection, inputs_key: str) -> StoredBacktest | None:
    r = conn.execute(
        select(_BT).where(_BT.c.inputs_key == inputs_key, _BT.c.status == "succeeded")
    ).first()
    return None if r is None else _row(r)


def get(conn: Connection, backtest_id: uuid.UUID) -> StoredBacktest | None:
    r = conn.execute(select(_BT).where(_BT.c.id == backtest_id)).first()
    return None if r is None else _row(r)


def set_progress(engine: Engine, backtest_id: uuid.UUID, progress: float, message: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(_BT)
            .where(_BT.c.id == backtest_id, _BT.c.status == "running")
            .values(progress=progress, message=message, updated_at=datetime.now(UTC))
        )


def fail(engine: Engine, backtest_id: uuid.UUID, error: str) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            update(_BT)
            .where(_BT.c.id == backtest_id)
            .values(status="failed", error=error, finished_at=now, updated_at=now)
        )


def succeed(
    conn: Connection,
    backtest_id: uuid.UUID,
    *,
    summary: dict[str, Any],
    report: dict[str, Any],
    names: Sequence[str],
    dates: Sequence[date],
    equity: np.ndarray,
) -> None:
    """Store the result and the curves in the caller's transaction (all or nothing)."""
    buf = io.StringIO()
    days = [d.isoformat() for d in dates]
    bid = str(backtest_id)
    for j, name in enumerate(names):
        col = equity[:, j]
        buf.writelines(
            f"{bid}\t{name}\t{d}\t{v!r}\n" for d, v in zip(days, col.tolist(), strict=True)
        )
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = "COPY backtest_equity (backtest_id, portfolio, as_of, equity) FROM STDIN"
    with raw.cursor() as cur, cur.copy(sql) as copy:
        copy.write(buf.getvalue())
    conn.execute(
        update(_BT)
        .where(_BT.c.id == backtest_id)
        .values(
            status="succeeded",
            progress=1.0,
            message="done",
            summary=summary,
            report=report,
            finished_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
    )


def equity(conn: Connection, backtest_id: uuid.UUID) -> dict[str, list[tuple[date, float]]]:
    """The stored curves, per portfolio, in date order."""
    q = select(_EQ.c.portfolio, _EQ.c.as_of, _EQ.c.equity).where(_EQ.c.backtest_id == backtest_id)
    out: dict[str, list[tuple[date, float]]] = {}
    for name, d, v in conn.execute(q.order_by(_EQ.c.portfolio, _EQ.c.as_of)):
        out.setdefault(name, []).append((d, v))
    return out
