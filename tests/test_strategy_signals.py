"""Signals and sizing: levels, action rules, the sizing invariants, the optimiser fallback."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.strategy.optimiser import risk_parity
from bloasis.strategy.profiles import PROFILE_PARAMS
from bloasis.strategy.signals import (
    ACTION_FACTOR,
    SECTOR_CAP,
    decide_action,
    price_levels,
    size_positions,
)
from bloasis.strategy.types import PROFILES

RISKS = ("high", "medium", "low")


@settings(max_examples=300, deadline=None)
@given(
    entry=st.floats(0.02, 100_000),
    atr_frac=st.floats(0.0, 0.3),
    vol=st.floats(0.01, 2.0),
    risk=st.sampled_from(RISKS),
)
def test_levels_are_ordered_and_quantized(
    entry: float, atr_frac: float, vol: float, risk: str
) -> None:
    lv = price_levels(entry, entry * atr_frac, vol, risk)
    t1, t2 = (t.level for t in lv.tiers)
    assert Decimal("0") < lv.stop < lv.entry < t1 < t2
    for price in (lv.entry, lv.stop, t1, t2):
        assert isinstance(price, Decimal) and price.as_tuple().exponent == -2
    assert [t.size_pct for t in lv.tiers] == [Decimal("0.33"), Decimal("0.33")]
    assert Decimal("0.01") <= lv.trailing_stop_pct <= Decimal("0.5")
    assert lv.trailing_stop_pct.as_tuple().exponent == -4


def test_levels_follow_atr_and_risk_multiplier() -> None:
    lv = price_levels(100.0, 2.0, 0.2, "medium")  # d = 2
    assert (lv.entry, lv.stop) == (Decimal("100.00"), Decimal("96.00"))
    assert [t.level for t in lv.tiers] == [Decimal("103.00"), Decimal("106.00")]
    assert lv.trailing_stop_pct == Decimal("0.0400")
    high, low = price_levels(100.0, 2.0, 0.2, "high"), price_levels(100.0, 2.0, 0.2, "low")
    assert (high.stop, low.stop) == (Decimal("97.00"), Decimal("95.00"))  # m = 0.75 / 1.25
    # Unknown ATR: daily volatility stands in (0.2 / sqrt(252) x 100 = 1.26).
    nan = price_levels(100.0, math.nan, 0.2, "medium")
    assert nan.stop == Decimal("97.48")


def test_action_rules() -> None:
    base = {"gap50": 0.05, "gap200": 0.10, "rsi": 55.0, "macd_hist": 0.2, "adx": 25.0}
    assert decide_action(**base, overextended=False)[0] == "buy"
    assert decide_action(**{**base, "rsi": 75.0}, overextended=False)[0] == "hold"
    assert decide_action(**base, overextended=True)[0] == "hold"
    assert decide_action(**{**base, "macd_hist": -0.1}, overextended=False)[0] == "hold"
    assert decide_action(**{**base, "gap200": -0.01}, overextended=False)[0] == "hold"
    assert decide_action(**{**base, "gap200": math.nan}, overextended=False)[0] == "buy"
    down = {"gap50": -0.05, "gap200": -0.10, "rsi": 35.0, "macd_hist": -0.2, "adx": 25.0}
    action, reason = decide_action(**down, overextended=False)
    assert action == "sell" and reason.startswith("sell: downtrend")
    assert decide_action(**{**down, "adx": 15.0}, overextended=False)[0] == "hold"  # chop
    assert decide_action(**{**down, "rsi": math.nan}, overextended=False)[0] == "sell"
    nan = dict.fromkeys(base, math.nan)
    assert decide_action(**nan, overextended=False)[0] == "hold"


@st.composite
def pick_sets(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(0, 20))
    vols = draw(st.lists(st.floats(0.0, 1.5), min_size=n, max_size=n))
    sectors = draw(st.lists(st.sampled_from("ABCDE"), min_size=n, max_size=n))
    actions = draw(st.lists(st.sampled_from(list(ACTION_FACTOR)), min_size=n, max_size=n))
    proposal = draw(
        st.none() | st.lists(st.floats(0.0, 1.0) | st.just(math.nan), min_size=n, max_size=n)
    )
    pairs = draw(st.sets(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, max(n - 1, 0)))))
    correlated: list[set[int]] = [set() for _ in range(n)]
    for a, b in pairs:
        if a != b and n:
            correlated[a].add(b)
            correlated[b].add(a)
    return {
        "vols": vols,
        "proposal": proposal,
        "sectors": sectors,
        "action_factor": [ACTION_FACTOR[a] for a in actions],
        "correlated": correlated,
    }


@settings(max_examples=300, deadline=None)
@given(inputs=pick_sets(), cap=st.floats(0.0001, 1.0))
def test_sizing_respects_every_cap(inputs: dict, cap: float) -> None:
    for p in PROFILES:
        target = PROFILE_PARAMS[p].target_vol
        w, halved = size_positions(**inputs, target_vol=target, cap=cap)
        assert len(w) == len(inputs["vols"]) and 0 <= halved <= len(w)
        assert all(x >= 0 and x <= cap * (1 + 1e-12) for x in w)
        for k, f in enumerate(inputs["action_factor"]):
            if f == 0:
                assert w[k] == 0
            assert w[k] <= f * cap * (1 + 1e-12)  # a hold is at most half a position
        exposure: dict[str, float] = {}
        for s, x in zip(inputs["sectors"], w, strict=True):
            exposure[s] = exposure.get(s, 0.0) + x
        assert all(v <= SECTOR_CAP + 1e-12 for v in exposure.values())
        assert sum(w) <= 1 + 1e-12


@settings(max_examples=300, deadline=None)
@given(inputs=pick_sets())
def test_sizing_is_monotone_in_profile_on_the_same_picks(inputs: dict) -> None:
    """By construction (see bloasis.strategy.signals): the total invested grows from
    conservative to moderate to aggressive on the same picks, and so does each sector's
    exposure unless the total had to be scaled down to 1."""
    runs = [
        size_positions(
            **inputs,
            target_vol=PROFILE_PARAMS[p].target_vol,
            cap=PROFILE_PARAMS[p].position_cap,
        )
        for p in PROFILES
    ]
    halved = {h for _, h in runs}
    assert len(halved) == 1  # the same positions are halved whatever the profile
    totals = [sum(w) for w, _ in runs]
    assert totals[0] <= totals[1] + 1e-12 and totals[1] <= totals[2] + 1e-12
    for sector in set(inputs["sectors"]):
        ex = [
            sum(x for s, x in zip(inputs["sectors"], w, strict=True) if s == sector)
            for w, _ in runs
        ]
        for lo, hi in ((0, 1), (1, 2)):
            if totals[hi] < 1 - 1e-9:
                assert ex[lo] <= ex[hi] + 1e-12


def test_sizing_rules_by_example() -> None:
    # Two buys in one sector, uncorrelated: vt = 0.15 / (0.3 x sqrt 2) = 0.3536 -> cap 0.10.
    w, h = size_positions(
        [0.3, 0.3], None, ["A", "A"], [1.0, 1.0], [set(), set()], target_vol=0.15, cap=0.10
    )
    assert w == [0.10, 0.10] and h == 0
    # Correlated: the smaller uncapped weight (higher vol) is halved.
    w, h = size_positions(
        [0.3, 0.6], None, ["A", "B"], [1.0, 1.0], [{1}, {0}], target_vol=0.05, cap=1.0
    )
    vt = [0.05 / (0.3 * math.sqrt(2)), 0.05 / (0.6 * math.sqrt(2))]
    assert w == pytest.approx([vt[0], vt[1] / 2]) and h == 1
    # Five capped buys in one sector: scaled to the 30% sector cap.
    w, _ = size_positions(
        [0.2] * 5, None, ["A"] * 5, [1.0] * 5, [set()] * 5, target_vol=0.25, cap=0.15
    )
    assert sum(w) == pytest.approx(0.30) and w[0] == pytest.approx(0.06)
    # The optimiser's proposal moves weight between names, not the total.
    w0, _ = size_positions(
        [0.5, 0.5], None, ["A", "B"], [1.0, 1.0], [set(), set()], target_vol=0.1, cap=1.0
    )
    w1, _ = size_positions(
        [0.5, 0.5], [0.8, 0.2], ["A", "B"], [1.0, 1.0], [set(), set()], target_vol=0.1, cap=1.0
    )
    assert sum(w1) == pytest.approx(sum(w0)) and w1[0] > w0[0] > w1[1]


def test_optimiser_proposal_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (300, 4)), axis=0))
    closes[:100, 3] = np.nan  # under a year of returns: not covered
    p = risk_parity(closes)
    assert p.weights is not None and np.isnan(p.weights[3])
    assert np.nansum(p.weights) == pytest.approx(1.0) and "risk-parity" in p.note

    from cvxpy import SolverError

    class Broken:
        def fit(self, x: object) -> Broken:
            raise SolverError("solver exploded\nwith details")

    monkeypatch.setattr("skfolio.optimization.RiskBudgeting", Broken)
    failed = risk_parity(closes)
    assert failed.weights is None and failed.fallback == "solver_failed"
    assert failed.note == (
        "optimiser failed (SolverError: solver exploded); volatility-targeted weights only"
    )
    assert risk_parity(closes[:, 3:]).weights is None  # fewer than two symbols covered
