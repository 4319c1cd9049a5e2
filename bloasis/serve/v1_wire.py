"""Conversions between what the server reads (domain values, v2 messages) and the original
BLOASIS v1 messages. Doubles where the original has doubles: money and sizes stay Decimal in
storage and decimal strings in v2; v1 gets their nearest double.

Names: the original used `Technology` and `Healthcare` where GICS (and v2) say `Information
Technology` and `Health Care`; the other nine sectors are named alike.

Themes (v1's GetThematicAnalysis, GetCandidateSymbols and pick `theme`): deterministic groups
of a selected sector's ranked candidates by their strongest factor — a candidate belongs to
the theme of the factor with its highest score (0-100; ties: the factor listed first in
`THEMES`); a theme's score is the mean final score of its members (0-100); its representative
symbols are its best three. Nothing is learnt or generated: the same stored run gives the same
themes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any, Final

from bloasis.pb.v1 import market_regime_pb2 as mr1
from bloasis.pb.v1 import strategy_pb2 as st1
from bloasis.pb.v2 import strategy_pb2 as st2
from bloasis.regime.types import OVERRIDE_SUFFIX, RegimeResult
from bloasis.serve.validation import invalid, show
from bloasis.strategy.types import GICS_SECTORS, UserPreferences
from bloasis.wire import rfc3339

V1_SECTOR: Final = {"Information Technology": "Technology", "Health Care": "Healthcare"}
GICS_OF_V1: Final = {v: k for k, v in V1_SECTOR.items()}
V1_SECTORS: Final = tuple(V1_SECTOR.get(s, s) for s in GICS_SECTORS)
PROFILE_OF: Final = {
    st1.CONSERVATIVE: "conservative",
    st1.MODERATE: "moderate",
    st1.AGGRESSIVE: "aggressive",
}
ENUM_OF: Final = {v: k for k, v in PROFILE_OF.items()}
# Factor -> theme name suffix; the order breaks ties.
THEMES: Final = {
    "momentum": "Momentum Leaders",
    "quality": "Quality Compounders",
    "value": "Value",
    "volatility": "Low Volatility",
    "trend": "Trend Followers",
    "liquidity": "Liquid Large Caps",
    "sentiment": "Sentiment",
}
# A price or weight has at most this many places in the store (NUMERIC(6, 4) for positions).
POSITION_PLACES: Final = 4


def v1_sector(gics: str) -> str:
    return V1_SECTOR.get(gics, gics)


def gics_sector(field: str, v1: str) -> str:
    """A v1 sector name (or its GICS name) as GICS; INVALID_ARGUMENT naming `field` else."""
    name = GICS_OF_V1.get(v1, v1)
    if name not in GICS_SECTORS:
        raise invalid(f"{field}: {show(v1)} is not a sector (one of {', '.join(V1_SECTORS)})")
    return name


def iso_of(ts: Any) -> str:
    """A google.protobuf.Timestamp as `iso`; empty when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return rfc3339(ts.ToDatetime(tzinfo=UTC), "seconds")


def regime_v1(r: RegimeResult, served_from: str = "") -> mr1.GetCurrentRegimeResponse:
    ind = r.indicators
    vix = ind.get("vix")
    return mr1.GetCurrentRegimeResponse(
        regime=r.regime,
        confidence=r.confidence,
        timestamp=rfc3339(r.computed_at, "seconds"),
        trigger=r.trigger,
        reasoning=r.reasoning,
        risk_level=r.risk_level,
        indicators=mr1.MarketIndicators(
            vix=float(vix) if vix is not None else 0.0,
            sp500_trend=str(ind.get("sp500_trend") or ""),
            yield_curve=str(ind.get("yield_curve_state") or "unknown"),
            credit_spreads=str(ind.get("credit_spread_state") or "unknown"),
        ),
        as_of=r.as_of.isoformat(),
        model_version=r.model_version,
        override=r.model_version.endswith(OVERRIDE_SUFFIX),
        served_from=served_from,
    )


def preferences_v1(p: UserPreferences) -> st1.UserPreferences:
    return st1.UserPreferences(
        user_id=p.user_id,
        risk_profile=ENUM_OF.get(p.risk_profile, st1.RISK_PROFILE_UNSPECIFIED),
        preferred_sectors=[v1_sector(s) for s in p.preferred_sectors],
        excluded_sectors=[v1_sector(s) for s in p.excluded_sectors],
        max_single_position=float(p.max_single_position),
    )


def preferences_from_v1(req: st1.UpdatePreferencesRequest) -> UserPreferences:
    """v1 fields as domain preferences (the domain rules then judge them). Unset risk_profile
    and max_single_position take the defaults, as in v2."""
    defaults = UserPreferences(user_id=req.user_id)
    profile = defaults.risk_profile
    if req.risk_profile:
        if req.risk_profile not in PROFILE_OF:
            raise invalid(f"risk_profile: unknown value {int(req.risk_profile)}")
        profile = PROFILE_OF[req.risk_profile]
    max_pos = defaults.max_single_position
    if req.max_single_position:
        x = req.max_single_position
        if x != x or x in (float("inf"), float("-inf")):
            raise invalid(f"max_single_position must be a number in (0, 1], got {x}")
        # The double's shortest repr is what the client wrote (0.08 -> "0.08").
        max_pos = Decimal(repr(x))
        exponent = max_pos.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > POSITION_PLACES:
            raise invalid(
                f"max_single_position has at most {POSITION_PLACES} decimal places, got {x!r}"
            )
    return UserPreferences(
        user_id=req.user_id,
        risk_profile=profile,
        preferred_sectors=tuple(gics_sector("preferred_sectors", s) for s in req.preferred_sectors),
        excluded_sectors=tuple(gics_sector("excluded_sectors", s) for s in req.excluded_sectors),
        max_single_position=max_pos,
    )


# --- themes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theme:
    name: str
    sector: str  # GICS
    factor: str
    score: float
    symbols: tuple[str, ...]  # best first

    @property
    def rationale(self) -> str:
        return (
            f"{len(self.symbols)} candidate(s) of {v1_sector(self.sector)} whose strongest "
            f"factor is {self.factor}; mean final score {self.score:.1f}"
        )


def theme_of_factors(factor_scores: Mapping[str, float]) -> str:
    """The factor of a candidate's highest score (ties: THEMES order); '' when it has none."""
    best, best_score = "", float("-inf")
    for factor in THEMES:
        v = factor_scores.get(factor)
        if v is not None and v > best_score:
            best, best_score = factor, v
    return best


def theme_name(sector: str, factor: str) -> str:
    return f"{v1_sector(sector)} {THEMES[factor]}" if factor else v1_sector(sector)


def themes(book: Iterable[Mapping[str, Any]], sectors: Sequence[str] | None = None) -> list[Theme]:
    """The themes of the ranked candidates in `book` (book rows: symbol, sector, final_score,
    factor_scores), within `sectors` (GICS; None: all), best score first."""
    groups: dict[tuple[str, str], list[tuple[float, str]]] = {}
    wanted = None if sectors is None else set(sectors)
    seen: set[str] = set()
    for e in book:
        sym = e["symbol"]
        if sym in seen or (wanted is not None and e["sector"] not in wanted):
            continue
        seen.add(sym)
        factor = theme_of_factors(e.get("factor_scores") or {})
        groups.setdefault((e["sector"], factor), []).append((float(e["final_score"]), sym))
    out = []
    for (sector, factor), members in groups.items():
        members.sort(key=lambda m: (-m[0], m[1]))
        score = sum(m[0] for m in members) / len(members)
        out.append(
            Theme(theme_name(sector, factor), sector, factor, score, tuple(m[1] for m in members))
        )
    out.sort(key=lambda t: (-t.score, t.name))
    return out


# --- strategies ------------------------------------------------------------------------------


def pick_v1(p: st2.Pick, theme: str) -> st1.StockPick:
    f = p.factor_scores
    return st1.StockPick(
        symbol=p.symbol,
        sector=v1_sector(p.sector),
        theme=theme,
        factor_scores=st1.FactorScores(
            momentum=f.get("momentum", 0.0),
            value=f.get("value", 0.0),
            quality=f.get("quality", 0.0),
            volatility=f.get("volatility", 0.0),
            liquidity=f.get("liquidity", 0.0),
            sentiment=f.get("sentiment", 0.0),
        ),
        final_score=p.final_score,
        rank=p.rank,
        rationale=p.rationale,
    )


def _num(s: str) -> float:
    return float(Decimal(s)) if s else 0.0


def signal_v1(g: st2.Signal, pick: st2.Pick | None) -> st1.TradingSignal:
    """`confidence`: the pick's final score / 100 (0 when the symbol is not a pick);
    `take_profit`: the first profit tier; `risk_approved`: every signal published passed the
    strategy's risk rules (position caps, correlation and sector limits)."""
    tiers = [st1.ProfitTier(level=_num(t.level), size_pct=_num(t.size_pct)) for t in g.profit_tiers]
    return st1.TradingSignal(
        symbol=g.symbol,
        action=g.action,
        confidence=round(pick.final_score / 100.0, 6) if pick is not None else 0.0,
        size_recommendation=_num(g.weight),
        entry_price=_num(g.entry_price),
        stop_loss=_num(g.stop_loss),
        take_profit=tiers[0].level if tiers else 0.0,
        rationale=pick.rationale if pick is not None else f"{g.action} {g.symbol}",
        risk_approved=True,
        profit_tiers=tiers,
        trailing_stop_pct=_num(g.trailing_stop_pct),
    )


def picks_by_theme(picks: Iterable[st2.Pick]) -> dict[str, str]:
    return {p.symbol: theme_name(p.sector, theme_of_factors(dict(p.factor_scores))) for p in picks}
