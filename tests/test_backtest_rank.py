"""CompareStrategies' ranking and a stored backtest's names (pure: no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bloasis.serve.backtesting_v2 import ranked
from bloasis.store.backtests import StoredBacktest


def _stored(
    summary: dict[str, dict[str, object]], names: list[str] | None = None
) -> StoredBacktest:
    return StoredBacktest(
        id=uuid.uuid4(), inputs_key="k", status="succeeded", spec={}, model_version="m",
        data_snapshot_hash="", progress=100.0, message="", summary=summary,
        report={"names": names} if names is not None else {}, error=None,
        created_at=datetime.now(UTC), finished_at=None,
    )  # fmt: skip


def test_best_sharpe_first_and_a_portfolio_without_measures_last() -> None:
    a = _stored({"moderate": {"sharpe": "0.4"}, "aggressive": {"sharpe": "0.9"}})
    b = _stored({"conservative": {"sharpe": None}})
    rows = [(a, "moderate"), (b, "conservative"), (a, "aggressive"), (b, "missing")]
    got = [(s is a, n) for s, n in ranked(rows)]
    assert got[:2] == [(True, "aggressive"), (True, "moderate")]
    assert {n for _, n in got[2:]} == {"conservative", "missing"}  # undefined: last, no error


def test_names_are_the_reports_else_the_summarys_order() -> None:
    assert _stored({"x": {}, "y": {}}, ["y", "x", "buy_and_hold"]).names == [
        "y",
        "x",
        "buy_and_hold",
    ]
    assert _stored({"x": {}, "y": {}}).names == ["x", "y"]
    assert _stored({}).names == []
