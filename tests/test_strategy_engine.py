"""Profile books and strategies on the embedded real data: crisis vs bull, point in time,
determinism, the book's contents and the optimiser fallback."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from bloasis.marketdata import EmbeddedSource, MarketData
from bloasis.marketdata.synthetic import generate
from bloasis.pipeline import compute_regime
from bloasis.regime.model import DEFAULT_PARAMS, RegimeModel
from bloasis.regime.types import RegimeResult
from bloasis.strategy.engine import ProfileBook, build_profile_book
from bloasis.strategy.profiles import PROFILE_PARAMS
from bloasis.strategy.sectors import analyze_sectors
from bloasis.strategy.signals import ACTION_FACTOR, size_positions
from bloasis.strategy.types import PROFILES, Strategy
from tests.factories import regime as make_regime

DEFENSIVE = {"Consumer Staples", "Health Care", "Utilities"}
CRISIS, BULL = date(2008, 10, 15), date(2017, 6, 15)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


def real_regime(md: MarketData, d: date) -> RegimeResult:
    model = RegimeModel(DEFAULT_PARAMS, "t")
    return compute_regime(md, d, trigger="manual", run_id=uuid.UUID(int=1), model=model)


def books_for(md: MarketData, d: date, r: RegimeResult) -> dict[str, ProfileBook]:
    a = analyze_sectors(md, d, r.regime)
    return {p: build_profile_book(md, d, r, a, p, model_version="t") for p in PROFILES}


def weight_by_sector(s: Strategy) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for sig in s.signals:
        out[sig.sector] = out.get(sig.sector, Decimal(0)) + sig.weight
    return out


def defensive_share(s: Strategy) -> float:
    w = weight_by_sector(s)
    total = sum(w.values(), Decimal(0))
    return float(sum((v for k, v in w.items() if k in DEFENSIVE), Decimal(0)) / total)


@pytest.fixture(scope="module")
def crisis_books(md: MarketData) -> dict[str, ProfileBook]:
    r = real_regime(md, CRISIS)
    assert (r.regime, r.risk_level) == ("crisis", "high")
    return books_for(md, CRISIS, r)


@pytest.fixture(scope="module")
def bull_books(md: MarketData) -> dict[str, ProfileBook]:
    r = real_regime(md, BULL)
    assert (r.regime, r.risk_level) == ("bull", "low")
    return books_for(md, BULL, r)


def test_crisis_conservative_is_led_by_defensive_sectors(
    crisis_books: dict[str, ProfileBook],
) -> None:
    s = crisis_books["conservative"].strategy
    assert s.regime == "crisis" and s.risk_level == "high"
    assert [p.sector in DEFENSIVE for p in s.picks[:5]] == [True] * 5
    assert defensive_share(s) > 0.5
    # Low volatility dominates the crisis weights: momentum x0.3, volatility x2.
    w = crisis_books["conservative"].factor_weights
    assert w["volatility"] > 0.7 and w["momentum"] < 0.1
    # A falling market: much of the book is cash, no buy signal.
    assert s.cash_weight > Decimal("0.5")
    assert all(sig.action != "buy" for sig in s.signals)


def test_bull_aggressive_is_not_dominated_by_defensive_sectors(
    bull_books: dict[str, ProfileBook],
) -> None:
    s = bull_books["aggressive"].strategy
    assert s.regime == "bull" and s.risk_level == "low"
    assert all(p.sector not in DEFENSIVE for p in s.picks[:5])
    assert defensive_share(s) < 0.5
    assert bull_books["aggressive"].factor_weights["momentum"] > 0.5


def test_strategy_fields_and_levels(bull_books: dict[str, ProfileBook]) -> None:
    book = bull_books["moderate"]
    s = book.strategy
    assert s.strategy_id == f"moderate:{BULL.isoformat()}:t" and s.user_id is None
    assert [p.rank for p in s.picks] == list(range(1, len(s.picks) + 1))
    assert [p.symbol for p in s.picks] == [g.symbol for g in s.signals]
    assert len(s.picks) == min(book.top_n, len(book.symbols))
    assert s.cash_weight == 1 - sum(g.weight for g in s.signals)
    assert "moderate" in s.picks[0].rationale and "bull regime" in s.picks[0].rationale
    assert "risk-parity" in s.rationale
    entries = book.indicators["entry"].to_numpy()
    atrs = book.indicators["atr_entry"].to_numpy()
    # Closes-only data: the entry is the last adjusted close.
    assert (entries == book.indicators["close"].to_numpy()).all()
    for g in s.signals:
        i = book.symbols.index(g.symbol)
        entry = float(entries[i])
        assert g.entry_price == Decimal(entry).quantize(Decimal("0.01"))
        d = float(atrs[i]) * 1.25  # risk level low
        assert float(g.stop_loss) == pytest.approx(entry - 2 * d, abs=0.011)
        assert float(g.profit_tiers[1].level) == pytest.approx(entry + 3 * d, abs=0.011)


def test_book_contents(crisis_books: dict[str, ProfileBook], md: MarketData) -> None:
    book = crisis_books["moderate"]
    entries = book.entries()
    assert [(p.symbol, p.rank) for p, _ in entries] == [
        (sym, i + 1) for i, sym in enumerate(book.symbols)
    ]
    assert all(g.weight == 0 and g.symbol == p.symbol for p, g in entries)
    by_symbol = {g.symbol: g for g in book.strategy.signals}
    for _, g in entries:
        if g.symbol in by_symbol:  # same levels as in the strategy
            assert (g.entry_price, g.stop_loss) == (
                by_symbol[g.symbol].entry_price,
                by_symbol[g.symbol].stop_loss,
            )
    n = len(book.symbols)
    assert n >= book.top_n or n == len(analyze_sectors(md, CRISIS, "crisis").candidates)
    assert list(book.scores) == sorted(book.scores, reverse=True)
    assert book.corr.shape == (n, n) and np.allclose(np.diag(book.corr), 1.0)
    assert book.proposal is not None and sum(book.proposal) == pytest.approx(1.0)
    assert list(book.indicators.index) == list(book.symbols)
    for i, partners in enumerate(book.correlated):
        assert all(book.corr[i, j] > 0.7 for j in partners) and i not in partners
    assert set(book.factor_weights) == {"momentum", "volatility", "trend"}


def test_sizes_grow_with_the_profile_on_the_same_picks(bull_books: dict[str, ProfileBook]) -> None:
    """What holds by construction: on one pick set, total invested is monotone in the
    profile (the strategies themselves pick different symbols per profile)."""
    book = bull_books["moderate"]
    idx = range(min(book.top_n, len(book.symbols)))
    totals = []
    for p in PROFILES:
        w, _ = size_positions(
            [book.vols[i] for i in idx],
            None if book.proposal is None else [book.proposal[i] for i in idx],
            [book.sectors[i] for i in idx],
            [ACTION_FACTOR[book.actions[i]] for i in idx],
            [[j for j in book.correlated[i] if j in idx] for i in idx],
            target_vol=PROFILE_PARAMS[p].target_vol,
            cap=PROFILE_PARAMS[p].position_cap,
        )
        totals.append(sum(w))
    assert totals == sorted(totals) and totals[0] < totals[2]


def test_point_in_time_on_real_data(md: MarketData, crisis_books: dict[str, ProfileBook]) -> None:
    cut = md.as_of(CRISIS)
    r = real_regime(md, CRISIS)
    assert books_for(cut, CRISIS, r)["conservative"].strategy == (
        crisis_books["conservative"].strategy
    )


def test_point_in_time_and_determinism_on_synthetic_data() -> None:
    md = generate(60, 3, seed=11).data
    d = md.index[-200].date()
    r = make_regime(d, "bear")
    full = books_for(md, d, r)
    cut = books_for(md.as_of(d), d, r)
    again = books_for(md, d, r)
    for p in PROFILES:
        assert full[p].strategy == cut[p].strategy == again[p].strategy
        assert full[p].strategy is not again[p].strategy


def test_entry_is_the_raw_close_and_atr_follows_it() -> None:
    """With OHLCV, factors use adjusted closes but orders need the traded price: here every
    raw bar is twice the adjusted one (say, a 2:1 split after the as-of date)."""
    base = generate(30, 2, seed=4).data
    assert base.ohlcv is not None
    raw = {k: v * 2 if k != "volume" else v for k, v in base.ohlcv.items()}
    md = MarketData(base.market, base.closes, raw, base.sectors, "split")
    d = md.last_date
    r = make_regime(d, "bull")
    a = analyze_sectors(md, d, "bull")
    book = build_profile_book(md, d, r, a, "moderate", model_version="t")
    ref = build_profile_book(base, d, r, a, "moderate", model_version="t")
    assert book.symbols == ref.symbols and book.scores == ref.scores
    np.testing.assert_allclose(book.indicators["entry"], 2 * ref.indicators["entry"])
    np.testing.assert_allclose(book.indicators["atr_entry"], 2 * ref.indicators["atr_entry"])
    np.testing.assert_allclose(book.indicators["rsi"], ref.indicators["rsi"])


def test_optimiser_failure_falls_back_and_says_so(
    md: MarketData, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def fit(self, x: object) -> Broken:
            raise ArithmeticError("no convergence")

    monkeypatch.setattr("skfolio.optimization.RiskBudgeting", Broken)
    r = real_regime(md, BULL)
    book = books_for(md, BULL, r)["moderate"]
    assert book.proposal is None
    s = book.strategy
    assert "optimiser failed (ArithmeticError: no convergence)" in s.rationale
    assert "volatility-targeted weights only" in s.rationale
    assert sum(g.weight for g in s.signals) <= 1


def test_no_candidates_or_untradeable_ones() -> None:
    md = generate(20, 2, seed=0).data
    d = md.index[10].date()  # too little history: no candidates
    r = make_regime(d, "crisis")
    book = build_profile_book(
        md, d, r, analyze_sectors(md, d, "crisis"), "moderate", model_version="t"
    )
    s = book.strategy
    assert book.symbols == () and s.picks == () and s.cash_weight == 1
    assert "all cash" in s.rationale
    # A candidate that does not trade on the as-of session is dropped.
    d = md.last_date
    a = analyze_sectors(md, d, "bull")
    closes = md.closes.copy()
    closes.loc[closes.index[-1], a.candidates[0]] = np.nan
    holed = MarketData(md.market, closes, None, md.sectors, "holed")
    book = build_profile_book(holed, d, make_regime(d, "bull"), a, "moderate", model_version="t")
    assert a.candidates[0] not in book.symbols and len(book.symbols) == len(a.candidates) - 1


def test_input_checks(md: MarketData) -> None:
    r = real_regime(md, BULL)
    a = analyze_sectors(md, BULL, "bull")
    with pytest.raises(ValueError, match="risk profile"):
        build_profile_book(md, BULL, r, a, "reckless", model_version="t")
    with pytest.raises(ValueError, match="as-of mismatch"):
        build_profile_book(md, date(2017, 6, 14), r, a, "moderate", model_version="t")
    with pytest.raises(ValueError, match="regime"):
        build_profile_book(
            md, BULL, r, analyze_sectors(md, BULL, "bear"), "moderate", model_version="t"
        )
    with pytest.raises(ValueError, match="top_n"):
        build_profile_book(md, BULL, r, a, "moderate", model_version="t", top_n=0)
