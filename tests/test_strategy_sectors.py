"""Sector analysis: tables, selection rule, candidates, real values, point in time."""

from __future__ import annotations

from collections import Counter
from datetime import date
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.marketdata import EmbeddedSource, MarketData
from bloasis.marketdata.synthetic import generate
from bloasis.regime.types import REGIMES
from bloasis.strategy.sectors import TILTS, SectorParams, analyze_sectors
from bloasis.strategy.types import GICS_SECTORS, SectorAnalysis

DEFENSIVE = {"Consumer Staples", "Health Care", "Utilities"}
CYCLICAL = {
    "Information Technology",
    "Consumer Discretionary",
    "Financials",
    "Industrials",
    "Materials",
    "Energy",
}


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


@cache
def synthetic(n: int, seed: int) -> MarketData:
    return generate(n, 2, seed).data


def check_analysis(a: SectorAnalysis, md: MarketData, params: SectorParams) -> None:
    assert sorted(s.sector for s in a.scores) == sorted(GICS_SECTORS)
    assert [s.rank for s in a.scores] == list(range(1, 12))
    scores = [s.score for s in a.scores]
    assert scores == sorted(scores, reverse=True)
    for s in a.scores:
        assert 0 <= s.score <= 100 and 0 <= s.tilt <= 100 and 0 <= s.strength <= 100
        if s.members == 0:
            assert s.strength == 50.0
    assert params.min_selected <= len(a.selected) <= params.max_selected
    with_members = [s for s in a.scores if s.members > 0]
    if len(with_members) >= params.min_selected:
        assert all(s.members > 0 for s in a.scores if s.selected)
    # Candidates: unique, from selected sectors, bounded per sector.
    assert len(set(a.candidates)) == len(a.candidates)
    sectors = md.sectors.reindex(list(a.candidates))
    assert set(sectors) <= set(a.selected)
    assert max(Counter(sectors).values(), default=0) <= params.per_sector


def test_tilt_table_is_keyed_by_all_regimes_and_leans_the_right_way() -> None:
    assert set(TILTS) == set(REGIMES)
    for regime in REGIMES:
        assert set(TILTS[regime]) == set(GICS_SECTORS)
    for regime in ("crisis", "bear"):
        assert min(TILTS[regime][s] for s in DEFENSIVE) > max(TILTS[regime][s] for s in CYCLICAL)
    for regime in ("bull", "recovery"):
        assert max(TILTS[regime][s] for s in DEFENSIVE) < min(
            TILTS[regime][s] for s in CYCLICAL if s != "Energy"
        )
    side = TILTS["sideways"].values()
    assert max(side) - min(side) <= 10  # neutral-ish


def test_crisis_puts_defensive_sectors_first_on_real_data(md: MarketData) -> None:
    a = analyze_sectors(md, date(2008, 10, 15), "crisis")
    check_analysis(a, md, SectorParams())
    # The embedded data has no Utilities member: Staples and Health Care lead.
    assert [s.sector for s in a.scores[:2]] == ["Consumer Staples", "Health Care"]
    assert {"Consumer Staples", "Health Care"} <= set(a.selected)
    assert "Utilities" not in a.selected  # no members
    sectors = md.sectors.reindex(list(a.candidates))
    assert (sectors.isin(DEFENSIVE)).mean() > 0.5


def test_bull_puts_cyclical_sectors_first_on_real_data(md: MarketData) -> None:
    a = analyze_sectors(md, date(2017, 6, 15), "bull")
    check_analysis(a, md, SectorParams())
    assert a.scores[0].sector in CYCLICAL and a.scores[1].sector in CYCLICAL
    assert a.candidates[0] in set(md.sectors[md.sectors.isin(CYCLICAL)].index)


def test_strength_is_relative_momentum_ranked(md: MarketData) -> None:
    d = date(2017, 6, 15)
    a = analyze_sectors(md, d, "sideways", params=SectorParams(tilt_weight=0.0))
    by = {s.sector: s for s in a.scores}
    # With tilt weight 0 the score is the strength; the best measured sector scores 100.
    measured = [s for s in a.scores if s.members > 0]
    assert max(s.strength for s in measured) == 100.0
    assert min(s.strength for s in measured) == 0.0
    # Recompute one sector's relative momentum by hand: mean of the members' percentiles.
    view = md.as_of(d).closes
    r3 = (view.iloc[-1] / view.iloc[-64] - 1).rank(pct=False)
    r6 = (view.iloc[-1] / view.iloc[-127] - 1).rank(pct=False)
    n = len(view.columns)
    pct = ((r3 - 1) / (n - 1) * 100 + (r6 - 1) / (n - 1) * 100) / 2
    rel = pct.groupby(md.sectors).mean()
    expected_order = rel.sort_values(ascending=False).index.tolist()
    got_order = sorted(
        (s for s in measured), key=lambda s: (-s.strength, GICS_SECTORS.index(s.sector))
    )
    assert [s.sector for s in got_order] == expected_order
    assert by[expected_order[0]].score == 100.0


def test_selection_pads_with_memberless_sectors_when_too_few_have_members() -> None:
    full = synthetic(40, 1)
    keep = full.sectors[full.sectors.isin(["Energy", "Utilities"])].index.tolist()
    md = MarketData(
        market=full.market,
        closes=full.closes[keep],
        ohlcv=None,
        sectors=full.sectors[keep],
        source="two sectors",
    )
    a = analyze_sectors(md, md.last_date, "bull")
    assert len(a.selected) == 3
    assert {"Energy", "Utilities"} <= set(a.selected)
    assert set(md.sectors.reindex(list(a.candidates))) <= {"Energy", "Utilities"}


def test_per_sector_bound_and_ordering() -> None:
    md = synthetic(80, 2)
    params = SectorParams(per_sector=2, select_score=0.0)
    a = analyze_sectors(md, md.last_date, "sideways", params=params)
    assert len(a.selected) == 7  # everything scores >= 0: capped at the maximum
    check_analysis(a, md, params)
    assert len(a.candidates) == 14


@settings(max_examples=20, deadline=None)
@given(
    n=st.sampled_from([20, 40, 80]),
    seed=st.integers(0, 3),
    regime=st.sampled_from(REGIMES),
    back=st.integers(0, 300),
)
def test_invariants_and_point_in_time_on_synthetic_universes(
    n: int, seed: int, regime: str, back: int
) -> None:
    md = synthetic(n, seed)
    d = md.index[-1 - back].date()
    a = analyze_sectors(md, d, regime)
    check_analysis(a, md, SectorParams())
    assert analyze_sectors(md.as_of(d), d, regime) == a


def test_symbols_without_sector_or_price_are_not_members() -> None:
    full = synthetic(20, 3)
    closes = full.closes.copy()
    closes.iloc[-1, 0] = np.nan  # not trading on the as-of session
    md = MarketData(
        market=full.market,
        closes=closes,
        ohlcv=None,
        sectors=full.sectors.drop(full.symbols[1]),  # no known sector
        source="holes",
    )
    a = analyze_sectors(md, md.last_date, "bull")
    assert full.symbols[0] not in a.candidates and full.symbols[1] not in a.candidates
    assert sum(s.members for s in a.scores) == 18


def test_errors() -> None:
    md = synthetic(20, 0)
    with pytest.raises(ValueError, match="regime"):
        analyze_sectors(md, md.last_date, "euphoria")
    with pytest.raises(ValueError, match="no market data"):
        analyze_sectors(md, date(1990, 1, 1), "bull")
    with pytest.raises(ValueError):
        SectorParams(min_selected=5, max_selected=4)


def test_too_little_history_gives_neutral_strength() -> None:
    md = synthetic(20, 0)
    d = md.index[10].date()  # 11 sessions: no 3-month return anywhere
    a = analyze_sectors(md, d, "crisis")
    assert all(s.strength == 50.0 for s in a.scores)
    assert a.candidates == ()
    assert 3 <= len(a.selected) <= 7  # selection still works on tilts alone
    assert a.as_of == d
