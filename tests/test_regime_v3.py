"""regime-v3 on the embedded real data: the recoveries it was built for, its labels and
reasoning, point in time, its parameters from the settings layer, the threshold selection
reading nothing after 2006, and a backfill of a model that is not the served one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from bloasis.app import backfill
from bloasis.config import Settings, SettingsError, load_settings
from bloasis.marketdata import MarketData
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.publish.cache import REGIME_CURRENT_KEY
from bloasis.regime.model import classify_frame, resolve_model, results_from_frame
from bloasis.regime.params import (
    DEFAULT_PARAMS,
    DEFAULT_V3_PARAMS,
    RegimeV3Params,
    algorithm_of,
)
from bloasis.regime.selection import SELECTION_END, select_v3
from bloasis.regime.types import REGIMES
from bloasis.store.models import OutboxRow, RegimeRow
from bloasis.wire import regime_from_pb, regime_to_pb

RUN = uuid.UUID(int=13)
NOW = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


@pytest.fixture(scope="module")
def v3(md: MarketData) -> pd.DataFrame:
    return classify_frame(md.market, DEFAULT_V3_PARAMS)


@pytest.fixture(scope="module")
def v2(md: MarketData) -> pd.DataFrame:
    return classify_frame(md.market, DEFAULT_PARAMS)


def _results(frame: pd.DataFrame, start: str, end: str) -> dict[date, object]:
    rs = results_from_frame(
        frame.loc[start:end], trigger="backfill", run_id=RUN, model_version="v", computed_at=NOW
    )
    return {r.as_of: r for r in rs}


@pytest.mark.slow
def test_2009_rebound_is_recognised_within_weeks_not_months(
    v3: pd.DataFrame, v2: pd.DataFrame
) -> None:
    """The weak point of regime-v2: bear from the 2009-03-09 trough until mid-September while
    the index rose 50%. regime-v3 ends the bear when the rebound is confirmed by credit."""
    after = v3.loc["2009-03-10":"2009-12-31", "regime"]
    first_bull_side = after[~after.isin(["bear", "crisis"])].index[0]
    sessions = v3.index.get_loc(first_bull_side) - v3.index.get_loc(pd.Timestamp("2009-03-09"))
    assert sessions <= 40
    assert v3.loc["2009-03-17", "recovered_on"] == "2009-03-17"
    assert v3.loc["2009-06-01", "regime"] == "recovery"
    assert v2.loc["2009-06-01", "regime"] in ("bear", "crisis")  # what regime-v2 said


def test_known_episodes_and_five_labels(v3: pd.DataFrame) -> None:
    assert v3.loc["2008-10-10", "regime"] == "crisis"
    assert v3.loc["2008-10-10", "decided_by"] == "crisis_volatility"
    assert v3.loc["2020-03-16", "regime"] == "crisis"
    assert v3.loc["2020-03-16", "data_trigger"] == "circuit_breaker"
    assert (v3.loc["2017", "regime"] == "bull").mean() > 0.9
    assert v3.loc["2002-07-23", "regime"] in ("bear", "crisis")
    shares = v3["regime"].value_counts(normalize=True)
    assert set(shares.index) == set(REGIMES) and shares.min() >= 0.02
    assert v3["confidence"].between(0, 1).all()
    # Risk levels follow SPEC §2 on the volatility the model uses (realised).
    high = (v3["regime"] == "crisis") | (v3["realised_vol"] > 30)
    assert (v3.loc[high, "risk_level"] == "high").all()


def test_recovery_means_a_higher_index_later(md: MarketData, v3: pd.DataFrame) -> None:
    close = md.market["index_close"]
    ahead = (close.shift(-126) / close - 1).reindex(v3.index)
    rec = (v3["regime"] == "recovery") & ahead.notna()
    base = (ahead[ahead.notna()] > 0).mean()
    assert rec.sum() > 100
    assert (ahead[rec] > 0).mean() > base + 0.1


def test_reasoning_names_what_decided(v3: pd.DataFrame) -> None:
    rs = _results(v3, "2008-01-01", "2017-12-31")
    crisis = rs[date(2008, 10, 10)]
    assert crisis.reasoning.startswith("Crisis (realised volatility ")  # type: ignore[attr-defined]
    rec = rs[date(2009, 6, 1)]
    assert "recovered on 2009-03-17" in rec.reasoning  # type: ignore[attr-defined]
    assert "off the bear's low 676.53 (2009-03-09)" in rec.reasoning  # type: ignore[attr-defined]
    assert rec.indicators["decided_by"] == "rebound_confirmed"  # type: ignore[attr-defined]
    bull = rs[date(2017, 6, 30)]
    assert "above a rising 200-day average" in bull.reasoning  # type: ignore[attr-defined]
    bear_days = v3.loc["2008-01-01":"2008-09-30"]
    bear_day = bear_days[bear_days["regime"] == "bear"].index[0].date()
    text = rs[bear_day].reasoning  # type: ignore[attr-defined]
    assert "from its cycle high 1,565.15 (2007-10-09)" in text


def test_v3_result_round_trips_through_the_wire(v3: pd.DataFrame) -> None:
    r = _results(v3, "2009-06-01", "2009-06-01")[date(2009, 6, 1)]
    back = regime_from_pb(regime_to_pb(r))  # type: ignore[arg-type]
    assert back.indicators["decided_by"] == "rebound_confirmed"
    assert back.indicators["rebound"] == pytest.approx(r.indicators["rebound"])  # type: ignore[attr-defined]
    assert back.indicators["realised_vol"] == pytest.approx(r.indicators["realised_vol"])  # type: ignore[attr-defined]


def test_without_a_credit_series_the_rebound_alone_decides_and_says_so(md: MarketData) -> None:
    market = md.market.loc[:"2009-12-31"].copy()
    market["credit_spread"] = np.nan
    frame = classify_frame(market, DEFAULT_V3_PARAMS)
    rs = _results(frame, "2009-03-01", "2009-12-31")
    rec = [r for r in rs.values() if r.regime == "recovery"]  # type: ignore[attr-defined]
    assert rec
    assert "credit spread unavailable, the rebound alone decided" in rec[0].reasoning  # type: ignore[attr-defined]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(i=st.integers(min_value=150, max_value=8312))
@pytest.mark.slow
def test_point_in_time_full_history_equals_cut(md: MarketData, v3: pd.DataFrame, i: int) -> None:
    d = md.market.index[i]
    cut = classify_frame(md.as_of(d).market, DEFAULT_V3_PARAMS)
    pd.testing.assert_frame_equal(cut, v3.loc[:d])


def test_future_shock_does_not_leak(md: MarketData, v3: pd.DataFrame) -> None:
    d = pd.Timestamp("2007-06-29")
    market = md.market.copy()
    after = market.index > d
    market.loc[after, "index_close"] *= 0.01
    market.loc[after, "credit_spread"] = 9.0
    shocked = classify_frame(market, DEFAULT_V3_PARAMS)
    pd.testing.assert_frame_equal(shocked.loc[:d], v3.loc[:d])
    assert not shocked.loc[d:, "regime"].equals(v3.loc[d:, "regime"])


@pytest.mark.slow
def test_selection_picks_the_shipped_defaults_and_reads_nothing_after_2006(
    md: MarketData,
) -> None:
    sel = select_v3(md.market)
    assert {k: getattr(DEFAULT_V3_PARAMS, k) for k in sel.chosen} == sel.chosen
    # Scramble everything after the selection span: the choice cannot change.
    market = md.market.copy()
    after = market.index > pd.Timestamp(SELECTION_END)
    rng = np.random.default_rng(5)
    market.loc[after, "index_close"] *= np.exp(rng.normal(0, 0.05, after.sum())).cumprod()
    market.loc[after, "credit_spread"] = rng.uniform(0.5, 4.0, after.sum())
    again = select_v3(market)
    assert again.chosen == sel.chosen and again.chosen_scores == sel.chosen_scores


# --- parameters from the settings layer -------------------------------------------------------
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: object, **env: str) -> Settings:
    for k in [k for k in __import__("os").environ if k.startswith("BLOASIS_REGIME_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings(state_dir=str(tmp_path))


def test_overrides_are_collected_once_and_validated_by_the_chosen_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    s = _settings(
        monkeypatch,
        tmp_path,
        BLOASIS_REGIME_REBOUND="0.2",
        BLOASIS_REGIME_TTL_SECONDS="60",  # a setting of its own, not a model parameter
        BLOASIS_MODEL_VERSION="regime-v3",
    )
    assert s.regime_overrides == {"rebound": "0.2"} and s.regime_ttl_seconds == 60
    m = resolve_model(s.model_version, s.universe, s.regime_overrides)
    assert m.algorithm == "regime-v3" and isinstance(m.params, RegimeV3Params)
    assert m.params.rebound == 0.2 and m.version.startswith("regime-v3+")
    # A regime-v3 parameter leaves regime-v2 (and its version) alone.
    v2 = resolve_model("regime-v2", "embedded", s.regime_overrides)
    assert v2.version == "regime-v2" and v2.algorithm == "regime-v2"
    # The domain reads no environment: the defaults stay the defaults.
    assert RegimeV3Params().rebound == DEFAULT_V3_PARAMS.rebound == 0.15
    assert resolve_model("regime-v3@live", "embedded").version == "regime-v3@live"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BLOASIS_REGIME_REBOUND": "lots"}, "BLOASIS_REGIME_REBOUND='lots'"),
        ({"BLOASIS_REGIME_REBOUND": "-1"}, "BLOASIS_REGIME_REBOUND='-1'"),
        ({"BLOASIS_REGIME_REBOUNCE": "0.2"}, "BLOASIS_REGIME_REBOUNCE: no regime model"),
        ({"BLOASIS_MODEL_VERSION": "regime-v9"}, "BLOASIS_MODEL_VERSION='regime-v9'"),
    ],
)
def test_bad_regime_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, env: dict[str, str], needle: str
) -> None:
    s = _settings(monkeypatch, tmp_path, **{"BLOASIS_MODEL_VERSION": "regime-v3", **env})
    with pytest.raises(SettingsError, match=needle.replace("+", r"\+")):
        resolve_model(s.model_version, s.universe, s.regime_overrides)


def test_algorithm_of_versions() -> None:
    assert algorithm_of("regime-v3+1a2b3c4d@live") == "regime-v3"
    assert algorithm_of("regime-v2-test-backfill") == "regime-v2"
    with pytest.raises(SettingsError):
        algorithm_of("regime-v20")


# --- a backfill of the model that is not served -----------------------------------------------
def _count(engine: Engine, model: type, version: str | None = None) -> int:
    q = select(func.count()).select_from(model)
    if version is not None:
        q = q.where(model.model_version == version)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def test_backfill_of_the_other_model_is_stored_only(
    clean_db: Engine, stack_settings: Settings
) -> None:
    served = f"regime-v2-shadow-{uuid.uuid4().hex[:8]}"
    s = stack_settings.model_copy(update={"model_version": served})
    r = redis.Redis.from_url(s.require("redis_url"))
    r.delete(REGIME_CURRENT_KEY)

    def run(model_version: str | None) -> dict[str, object]:
        req = backfill.BackfillRequest(
            date(2020, 1, 2), date(2020, 6, 30), relay=False, model_version=model_version
        )
        return asyncio.run(backfill.run_backfill(req, run_id=uuid.uuid4(), settings=s))

    shadow = run("regime-v3")
    out = shadow["outcome"]
    assert shadow["model_version"] == "regime-v3"
    assert out.inserted == out.plan.sessions == _count(clean_db, RegimeRow, "regime-v3")  # type: ignore[attr-defined]
    assert out.events == 0 and _count(clean_db, OutboxRow) == 0  # type: ignore[attr-defined]
    assert str(shadow["cache"]).startswith("not published: the served model is " + served)
    assert r.get(REGIME_CURRENT_KEY) is None
    assert {x.regime for x in out.results} >= {"crisis", "bear"}  # type: ignore[attr-defined]

    main = run(None)
    assert main["model_version"] == served and main["outcome"].events > 0  # type: ignore[attr-defined]
    assert r.get(REGIME_CURRENT_KEY) is not None
    r.close()


def test_no_bear_above_the_high_it_fell_from(v3: pd.DataFrame) -> None:
    """A bear whose index closes above the high it fell from is over (regressed: 1991, 1998 and
    1999 were labelled bear at new highs before the rule)."""
    assert not ((v3["regime"] == "bear") & (v3["sp500_close"] > v3["cycle_high"])).any()
    regained = sorted(set(v3.loc[v3["regained_high"], "recovered_on"]) - {""})
    assert regained == ["1991-02-13", "1998-11-23", "1999-11-16", "2018-08-24"]
    assert v3.loc["1999-11-15", "regime"] == "bear"
    assert v3.loc["1999-11-16", "regime"] in ("bull", "recovery")


def test_the_comparison_refuses_an_out_of_sample_start_outside_the_data(md: MarketData) -> None:
    from bloasis.app.regime_compare import CompareError, CompareRequest, run_comparison

    with pytest.raises(
        CompareError, match=r"oos_start 2007-01-01 is outside the data \(1990-01-02..2005-12-30\)"
    ):
        run_comparison(md, CompareRequest(end=date(2005, 12, 30)))
    with pytest.raises(CompareError, match="cost_bp must be >= 0, got -1"):
        run_comparison(md, CompareRequest(cost_bp=-1))
