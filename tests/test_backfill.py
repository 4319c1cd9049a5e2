"""The validated regime model and its backfill: SPEC §2 targets on the real data, point in time,
idempotent reruns, change and alert events in order through the broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import date

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from bloasis.app import backfill
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.pipeline import compute_regime
from bloasis.publish.events import ALERT_TOPIC, REGIME_TOPIC
from bloasis.publish.relay import relay_pending
from bloasis.regime.model import DEFAULT_PARAMS, RegimeModel
from bloasis.regime.validation import BEAR_MARKETS
from bloasis.store.models import OutboxRow, RegimeRow
from tests.kafka_util import consume_all

RUN = uuid.UUID(int=42)
MODEL = RegimeModel(DEFAULT_PARAMS, "regime-v2-test-backfill")


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


@pytest.fixture(scope="module")
def full(md: MarketData) -> tuple[backfill.BackfillPlan, list, pd.DataFrame]:
    return backfill.compute(md, date(1990, 1, 2), date(2022, 12, 28), model=MODEL, run_id=RUN)


def test_validation_targets_on_real_history(
    md: MarketData, full: tuple[backfill.BackfillPlan, list, pd.DataFrame]
) -> None:
    """Measured 0.84 pooled, key windows 0.81-0.96, calm 0.93, median 4 changes a year;
    asserted a few points below."""
    from bloasis.regime.validation import validate_labels

    plan, results, frame = full
    assert plan.sessions == len(results) == 8194 and plan.end == date(2022, 12, 28)
    rep = validate_labels(frame["regime"], md.market["index_close"])
    assert rep.pooled_stress_share is not None and rep.pooled_stress_share >= 0.80
    shares = {w.peak: w.stress_share for w in rep.windows}
    for peak in ("2000-03-24", "2007-10-09", "2020-02-19", "2022-01-03"):
        assert (shares[peak] or 0) >= 0.75, (peak, shares[peak])
    assert len([w for w in rep.windows if w.stress_share is not None]) == len(BEAR_MARKETS)
    assert rep.calm_bull_share is not None and rep.calm_bull_share >= 0.90
    assert rep.median_changes_per_year <= 5
    assert max(rep.changes_per_year.values()) <= 12
    assert set(rep.label_distribution) == {"bull", "bear", "crisis", "recovery", "sideways"}
    assert 0.55 <= rep.label_distribution["bull"] <= 0.75


def test_recovery_and_sideways_mean_what_they_say(
    full: tuple[backfill.BackfillPlan, list, pd.DataFrame],
) -> None:
    _, _, f = full
    rec = f[f["regime"] == "recovery"]
    # Recovery: above the 200-day average again, after stress, not yet clear of the old high
    # (measured 0.97 and 0.75; the dwell filter holds a label a few sessions past its rule).
    assert (rec["sma200_gap"] > 0).mean() > 0.93
    assert ((rec["drawdown"] < -0.05) | (rec["sma200_slope"] <= 0)).mean() > 0.7
    side = f[f["regime"] == "sideways"]
    assert side["sma200_gap"].abs().median() < 0.03  # range-bound: close to the average
    assert (side["sma200_gap"].abs() < 0.05).mean() > 0.95
    # The rebound from the March 2009 low passes through recovery before bull.
    assert "recovery" in set(f.loc["2009-03-10":"2009-09-30", "regime"])


def test_confidence_combines_rules_and_hmm(
    full: tuple[backfill.BackfillPlan, list, pd.DataFrame],
) -> None:
    _, results, f = full
    row = f.loc["2008-10-10"]
    assert row["regime"] == "crisis" and row["high_vol_prob"] > 0.95
    assert row["confidence"] == pytest.approx(
        0.6 * row["rule_confidence"] + 0.4 * row["high_vol_prob"], abs=1e-3
    )
    early = f.loc["1991-06-03"]
    assert pd.isna(early["high_vol_prob"]) and early["confidence"] == early["rule_confidence"]
    r = next(x for x in results if x.as_of == date(2008, 10, 10))
    assert "filtered probability of the high-volatility state" in r.reasoning
    assert r.indicators["high_vol_prob"] == pytest.approx(row["high_vol_prob"], abs=1e-4)


_BEAR_DAYS = [date(2008, 10, 10), date(2020, 3, 16), date(2022, 6, 16), date(2001, 9, 21)]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(i=st.integers(min_value=150, max_value=8312))
def test_backfill_equals_single_day_run(
    md: MarketData, full: tuple[backfill.BackfillPlan, list, pd.DataFrame], i: int
) -> None:
    """The backfill's result for D equals `bloasis run --as-of D` (same compute path) for
    random D, including days inside bear markets (below)."""
    _check_same(md, full, md.market.index[i].date())


@pytest.mark.parametrize("d", _BEAR_DAYS)
def test_backfill_equals_single_day_run_in_bear_markets(
    md: MarketData, full: tuple[backfill.BackfillPlan, list, pd.DataFrame], d: date
) -> None:
    _check_same(md, full, d)


def _check_same(
    md: MarketData, full: tuple[backfill.BackfillPlan, list, pd.DataFrame], d: date
) -> None:
    _, results, _ = full
    by_day = {r.as_of: r for r in results}
    if d not in by_day:
        return  # before the first classifiable session
    one = compute_regime(md, d, trigger="backfill", run_id=RUN, model=MODEL)
    b = by_day[d]
    assert (one.regime, one.confidence, one.risk_level, one.trigger, one.reasoning) == (
        b.regime,
        b.confidence,
        b.risk_level,
        b.trigger,
        b.reasoning,
    )
    assert one.indicators == b.indicators


def test_appending_later_data_never_changes_earlier_results(md: MarketData) -> None:
    cut = date(2015, 6, 30)
    early = backfill.compute(md.as_of(cut), date(2015, 1, 2), cut, model=MODEL, run_id=RUN)[1]
    late = backfill.compute(md, date(2015, 1, 2), date(2016, 6, 30), model=MODEL, run_id=RUN)[1]
    assert [(r.as_of, r.regime, r.confidence, r.reasoning) for r in early] == [
        (r.as_of, r.regime, r.confidence, r.reasoning) for r in late if r.as_of <= cut
    ]


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_backfill_persists_idempotently_and_publishes_in_order(
    md: MarketData, clean_db: Engine, stack_settings: Settings
) -> None:
    settings = stack_settings.model_copy(update={"model_version": MODEL.version})

    def run(start: date, end: date, chunk_size: int) -> backfill.BackfillOutcome:
        req = backfill.BackfillRequest(start, end, chunk_size=chunk_size, relay=False)
        out = asyncio.run(backfill.run_backfill(req, run_id=RUN, settings=settings))
        return out["outcome"]

    out = run(date(2019, 10, 1), date(2020, 6, 30), 50)
    assert out.inserted == out.plan.sessions == _count(clean_db, RegimeRow)
    n_events = _count(clean_db, OutboxRow)
    assert out.events == n_events > 0
    again = run(date(2019, 10, 1), date(2020, 6, 30), 1000)
    assert (again.inserted, again.existing, again.events) == (0, out.plan.sessions, 0)
    assert _count(clean_db, OutboxRow) == n_events

    bootstrap = stack_settings.require("kafka_bootstrap_servers")
    stats = asyncio.run(relay_pending(clean_db, bootstrap, idempotence=False))
    assert stats.published == n_events and stats.pending == 0
    changes = [
        json.loads(e.value)
        for e in asyncio.run(consume_all(bootstrap, REGIME_TOPIC))
        if e.headers["event_id"].startswith("regime_change:regime-v2-test-backfill:")
    ]
    as_ofs = [c["regime"]["as_of"] for c in changes]
    assert as_ofs == sorted(as_ofs) and len(set(as_ofs)) == len(as_ofs)
    # Each change starts from the label the previous one ended in.
    for prev, cur in itertools.pairwise(changes):
        assert cur["previous_regime"] == prev["new_regime"]
    labels = [r.regime for r in out.results]
    assert len(changes) == 1 + sum(a != b for a, b in itertools.pairwise(labels))
    # Backfilled results are history: every change says so, and no live alert is raised for
    # them (2020's crisis and the 2020-03-16 circuit breaker included).
    assert changes and all(c["historical"] is True for c in changes)
    assert changes[0]["previous_regime"] == ""  # no stored regime for the session before
    assert "crisis" in {c["new_regime"] for c in changes}
    alerts = [
        e
        for e in asyncio.run(consume_all(bootstrap, ALERT_TOPIC))
        if e.headers["event_id"].split(":")[1] == "regime-v2-test-backfill"
    ]
    assert alerts == []
