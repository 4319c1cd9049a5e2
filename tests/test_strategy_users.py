"""Per-user derivation: invariants over random synthetic universes and random preferences,
validation, equivalences (batch vs single, neutral user vs profile strategy)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.marketdata import MarketData
from bloasis.marketdata.synthetic import generate
from bloasis.regime.types import REGIMES, RegimeResult
from bloasis.strategy.engine import ProfileBook, build_profile_book
from bloasis.strategy.profiles import PROFILE_PARAMS
from bloasis.strategy.sectors import analyze_sectors
from bloasis.strategy.types import GICS_SECTORS, PROFILES, Strategy, UserPreferences
from bloasis.strategy.users import (
    PREFERRED_BOOST,
    InvalidPreferences,
    derive_many,
    derive_user_strategy,
    validate_preferences,
)

CENT, BASIS = Decimal("0.01"), Decimal("0.0001")


def make_regime(d: date, label: str, risk: str) -> RegimeResult:
    return RegimeResult(
        as_of=d,
        regime=label,
        confidence=0.7,
        risk_level=risk,
        trigger="manual",
        reasoning="test",
        indicators={},
        model_version="t",
        run_id=uuid.UUID(int=2),
        computed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@cache
def universe(n: int, seed: int) -> MarketData:
    return generate(n, 2, seed).data


@cache
def books(n: int, seed: int, label: str, risk: str, top_n: int) -> dict[str, ProfileBook]:
    md = universe(n, seed)
    d = md.last_date
    a = analyze_sectors(md, d, label)
    r = make_regime(d, label, risk)
    return {p: build_profile_book(md, d, r, a, p, top_n=top_n, model_version="t") for p in PROFILES}


def check_strategy(s: Strategy, book: ProfileBook, cap: Decimal) -> None:
    assert s.as_of == book.as_of and s.regime == book.regime and s.risk_profile == book.profile
    symbols = [p.symbol for p in s.picks]
    assert len(set(symbols)) == len(symbols)
    assert symbols == [g.symbol for g in s.signals]
    assert [p.rank for p in s.picks] == list(range(1, len(symbols) + 1))
    exposure: dict[str, Decimal] = {}
    for p, g in zip(s.picks, s.signals, strict=True):
        assert 0 <= p.final_score <= 100
        assert all(0 <= v <= 100 for v in p.factor_scores.values())
        for value in (g.weight, g.entry_price, g.stop_loss, g.trailing_stop_pct):
            assert isinstance(value, Decimal)
        assert all(
            isinstance(t.level, Decimal) and isinstance(t.size_pct, Decimal) for t in g.profit_tiers
        )
        assert g.weight.as_tuple().exponent == -4 and g.entry_price.as_tuple().exponent == -2
        assert Decimal(0) <= g.weight <= cap
        assert g.action in ("buy", "sell", "hold")
        if g.action == "sell":
            assert g.weight == 0
        if g.action == "buy":
            assert g.stop_loss < g.entry_price < g.profit_tiers[0].level < g.profit_tiers[1].level
        exposure[g.sector] = exposure.get(g.sector, Decimal(0)) + g.weight
    assert all(v <= Decimal("0.30") for v in exposure.values())
    total = sum((g.weight for g in s.signals), Decimal(0))
    assert total <= 1 and s.cash_weight == 1 - total and isinstance(s.cash_weight, Decimal)


@st.composite
def preferences(draw: st.DrawFn, user_id: str = "u") -> UserPreferences:
    roles = draw(st.lists(st.sampled_from("pen"), min_size=11, max_size=11))
    return UserPreferences(
        user_id=user_id,
        risk_profile=draw(st.sampled_from(PROFILES)),
        preferred_sectors=tuple(s for s, r in zip(GICS_SECTORS, roles, strict=True) if r == "p"),
        excluded_sectors=tuple(s for s, r in zip(GICS_SECTORS, roles, strict=True) if r == "e"),
        max_single_position=draw(
            st.decimals(min_value=BASIS, max_value=Decimal(1), places=4)
            | st.sampled_from([Decimal("0.05"), Decimal("0.1"), Decimal("0.123456")])
        ),
    )


universes = st.tuples(
    st.sampled_from([20, 40, 80]),
    st.integers(0, 3),
    st.sampled_from(REGIMES),
    st.sampled_from(("low", "medium", "high")),
    st.sampled_from([5, 15]),
)


@settings(max_examples=60, deadline=None)
@given(key=universes, prefs=st.lists(preferences(), min_size=1, max_size=5))
@pytest.mark.slow
def test_user_strategies_keep_every_invariant(
    key: tuple[int, int, str, str, int], prefs: list[UserPreferences]
) -> None:
    bs = books(*key)
    for p in PROFILES:
        check_strategy(bs[p].strategy, bs[p], Decimal(str(PROFILE_PARAMS[p].position_cap)))
    for u in prefs:
        book = bs[u.risk_profile]
        s = derive_user_strategy(book, u, model_version="v9")
        cap = min(Decimal(str(book.params.position_cap)), u.max_single_position)
        check_strategy(s, book, cap)
        assert s.user_id == "u" and s.strategy_id == f"user:u:{book.as_of.isoformat()}:v9"
        assert not {p.sector for p in s.picks} & set(u.excluded_sectors)
        # Backfill: the picks are the best remaining candidates after the preferred boost.
        allowed = [i for i, sec in enumerate(book.sectors) if sec not in u.excluded_sectors]
        assert len(s.picks) == min(book.top_n, len(allowed))
        bonus = [PREFERRED_BOOST if sec in u.preferred_sectors else 0.0 for sec in book.sectors]
        best = sorted(allowed, key=lambda i: (-(book.scores[i] + bonus[i]), i))[: book.top_n]
        assert [p.symbol for p in s.picks] == [book.symbols[i] for i in best]
        # Deterministic, and the batch path agrees.
        assert derive_user_strategy(book, u, model_version="v9") == s
        assert derive_many(bs, [u], model_version="v9") == [s]


def test_neutral_user_gets_the_profile_strategy() -> None:
    bs = books(80, 1, "bull", "low", 15)
    for p in PROFILES:
        cap = Decimal(str(PROFILE_PARAMS[p].position_cap))
        u = UserPreferences(user_id="n", risk_profile=p, max_single_position=cap)
        s, ref = derive_user_strategy(bs[p], u, model_version="t"), bs[p].strategy
        assert (s.picks, s.signals, s.cash_weight, s.rationale) == (
            ref.picks,
            ref.signals,
            ref.cash_weight,
            ref.rationale,
        )
        assert s.strategy_id != ref.strategy_id and ref.user_id is None


def test_exclusions_backfill_and_preferences_boost() -> None:
    bs = books(80, 2, "recovery", "medium", 5)
    book = bs["aggressive"]
    top = book.strategy.picks
    first = top[0].sector
    u = UserPreferences(user_id="x", risk_profile="aggressive", excluded_sectors=(first,))
    s = derive_user_strategy(book, u, model_version="t")
    assert first not in {p.sector for p in s.picks} and len(s.picks) == 5
    assert "excluded " + first in s.rationale
    # Preferring the sector of the best candidate outside the top 5 brings it in.
    outside = next(i for i in range(5, len(book.symbols)) if book.sectors[i] != first)
    sector = book.sectors[outside]
    u = UserPreferences(user_id="y", risk_profile="aggressive", preferred_sectors=(sector,))
    s = derive_user_strategy(book, u, model_version="t")
    if book.scores[outside] + PREFERRED_BOOST > book.scores[4]:
        assert book.symbols[outside] in {p.symbol for p in s.picks}
    boosted = [p for p in s.picks if p.sector == sector]
    assert boosted and all("preferred sector" in p.rationale for p in boosted)
    assert all(
        p.final_score == round(min(100.0, book.scores[book.symbols.index(p.symbol)] + 10), 2)
        for p in boosted
    )


def test_max_single_position_caps_below_the_profile_cap() -> None:
    book = books(80, 3, "bull", "low", 15)["aggressive"]
    u = UserPreferences(
        user_id="c", risk_profile="aggressive", max_single_position=Decimal("0.012345")
    )
    s = derive_user_strategy(book, u, model_version="t")
    assert max(g.weight for g in s.signals) <= Decimal("0.0123")
    assert "caps 1.23% per position" in s.rationale


def test_excluding_every_pool_sector_leaves_cash() -> None:
    book = books(40, 0, "crisis", "high", 15)["conservative"]
    u = UserPreferences(
        user_id="z", risk_profile="conservative", excluded_sectors=tuple(set(book.sectors))
    )
    s = derive_user_strategy(book, u, model_version="t")
    assert s.picks == () and s.signals == () and s.cash_weight == 1
    assert "all cash" in s.rationale


def test_validation_messages_name_the_field() -> None:
    ok = UserPreferences(user_id="a")
    assert validate_preferences(ok) == []
    bad = UserPreferences(
        user_id="",
        risk_profile="yolo",
        preferred_sectors=("Energy", "Tech"),
        excluded_sectors=("Energy", "Crypto"),
        max_single_position=Decimal("1.5"),
    )
    msgs = validate_preferences(bad)
    fields = [m.split(":")[0] for m in msgs]
    assert fields == [
        "user_id",
        "risk_profile",
        "max_single_position",
        "preferred_sectors",
        "excluded_sectors",
        "preferred_sectors",
    ]
    assert "'Tech'" in msgs[3] and "'Crypto'" in msgs[4] and "'Energy'" in msgs[5]
    for m in (Decimal(0), Decimal("-0.1"), Decimal("NaN"), Decimal("Infinity"), 0.1):
        p = UserPreferences(user_id="a", max_single_position=m)  # type: ignore[arg-type]
        assert [x.split(":")[0] for x in validate_preferences(p)] == ["max_single_position"]
    assert validate_preferences(UserPreferences(user_id="a", max_single_position=Decimal(1))) == []


def test_invalid_preferences_raise() -> None:
    bs = books(20, 0, "bull", "low", 15)
    with pytest.raises(InvalidPreferences) as err:
        derive_user_strategy(
            bs["moderate"], UserPreferences(user_id="a", risk_profile="x"), model_version="t"
        )
    assert err.value.messages[0].startswith("risk_profile:")
    with pytest.raises(InvalidPreferences, match="book is for 'moderate'"):
        derive_user_strategy(
            bs["moderate"],
            UserPreferences(user_id="a", risk_profile="aggressive"),
            model_version="t",
        )
    good = UserPreferences(user_id="a")
    with pytest.raises(InvalidPreferences, match="user_id"):
        derive_many(bs, [good, UserPreferences(user_id=" ")], model_version="t")
    with pytest.raises(ValueError, match="no profile book"):
        derive_many(
            {"moderate": bs["moderate"]},
            [UserPreferences(user_id="a", risk_profile="aggressive")],
            model_version="t",
        )


def test_derive_many_matches_single_derivations_in_order() -> None:
    bs = books(80, 0, "sideways", "medium", 15)
    rng = np.random.default_rng(4)
    prefs = []
    for i in range(300):
        roles = rng.choice(["p", "e", "n", "n", "n"], size=11)
        prefs.append(
            UserPreferences(
                user_id=f"user-{i}",
                risk_profile=str(rng.choice(PROFILES)),
                preferred_sectors=tuple(
                    s for s, r in zip(GICS_SECTORS, roles, strict=True) if r == "p"
                ),
                excluded_sectors=tuple(
                    s for s, r in zip(GICS_SECTORS, roles, strict=True) if r == "e"
                ),
                max_single_position=Decimal(int(rng.integers(1, 21))) / 100,
            )
        )
    batch = derive_many(bs, prefs, model_version="m")
    assert [s.user_id for s in batch] == [p.user_id for p in prefs]
    for p, s in zip(prefs[:60], batch[:60], strict=True):
        assert s == derive_user_strategy(bs[p.risk_profile], p, model_version="m")


def test_fundamentals_enter_the_score_when_supplied() -> None:
    md = universe(40, 1)
    d = md.last_date
    a = analyze_sectors(md, d, "bear")
    fundamentals = pd.DataFrame(
        {
            "value": np.linspace(0, 1, len(md.symbols)),
            "quality": np.linspace(1, 0, len(md.symbols)),
        },
        index=md.symbols,
    )
    r = make_regime(d, "bear", "medium")
    book = build_profile_book(
        md, d, r, a, "conservative", model_version="t", fundamentals=fundamentals
    )
    assert {"value", "quality"} <= set(book.factor_weights)
    assert book.factor_weights["quality"] > book.factor_weights["value"]
    assert all({"value", "quality"} <= set(f) for f in book.factor_scores)
