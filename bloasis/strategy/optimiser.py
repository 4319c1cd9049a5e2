"""The optimiser's proposal: risk parity (skfolio `RiskBudgeting`, variance, equal budgets) on
the candidates' last year of daily returns.

Risk parity needs no expected-return estimate (the least reliable input) and spreads risk, not
capital, which complements volatility targeting. It runs once per profile on the whole candidate
pool; a strategy on a subset of the pool (a user's picks) uses the pool weights renormalised over
that subset: an approximation of risk parity on the subset, cheap enough for every user.

Only symbols with a complete year of returns are optimised; the others get NaN (sizing then uses
their volatility-target weight alone).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

RETURNS_WINDOW = 252
MIN_ASSETS = 2


@dataclass(frozen=True)
class Proposal:
    weights: np.ndarray | None  # per symbol, NaN where not covered; None when it fell back
    note: str  # for the strategy rationale
    # Why it fell back to volatility-targeted weights ("" when it did not): FEW_ASSETS, or
    # SOLVER_FAILED (recorded in the run's result, logged, counted: never silent).
    fallback: str = ""


FEW_ASSETS = "few_assets"
SOLVER_FAILED = "solver_failed"


def risk_parity(closes: np.ndarray) -> Proposal:
    """Proposal from (sessions x symbols) closes ending at the as-of row."""
    c = np.asarray(closes, dtype=np.float64)[-(RETURNS_WINDOW + 1) :]
    n = c.shape[1]
    full = (c.shape[0] == RETURNS_WINDOW + 1) & ~np.isnan(c).any(axis=0)
    covered = np.flatnonzero(full)
    if covered.size < MIN_ASSETS:
        return Proposal(
            None,
            f"no optimiser proposal: {covered.size} candidate(s) with a full year of returns "
            "(needs 2); volatility-targeted weights only",
            FEW_ASSETS,
        )
    returns = c[1:, covered] / c[:-1, covered] - 1.0
    # Imported here: skfolio costs ~1.6 s to import. Not inside the try: a missing package is
    # a broken installation, not a fallback.
    from cvxpy import SolverError
    from skfolio.exceptions import SkfolioError
    from skfolio.optimization import RiskBudgeting

    try:
        with warnings.catch_warnings():
            # "Solution may be inaccurate" warnings: the result is checked below instead.
            warnings.simplefilter("ignore")
            model = RiskBudgeting().fit(returns)
        w = np.asarray(model.weights_, dtype=np.float64)
        if w.shape != (covered.size,) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"unusable weights {w!r}")
    # What the solver raises on data it cannot solve (and our check above); anything else is
    # a bug and fails the run.
    except (SkfolioError, SolverError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        first_line = (str(exc).splitlines() or [""])[0][:160]
        return Proposal(
            None,
            f"optimiser failed ({type(exc).__name__}: {first_line}); volatility-targeted "
            "weights only",
            SOLVER_FAILED,
        )
    out = np.full(n, np.nan)
    out[covered] = np.clip(w, 0.0, None) / np.clip(w, 0.0, None).sum()
    return Proposal(
        out,
        f"risk-parity proposal (skfolio RiskBudgeting) on {covered.size} candidates' 1-year "
        "returns blended 50/50 with volatility-targeted weights",
    )


def pool_proposal(closes: np.ndarray, symbols: list[str]) -> Proposal:
    """`risk_parity` of a pool, solved with its columns in symbol order and handed back in the
    pool's: the proposal depends on the set of symbols, not on how a profile ranked them (the
    three profiles' pools usually hold the same set, and a backtest solves it once)."""
    order = sorted(range(len(symbols)), key=lambda j: symbols[j])
    p = risk_parity(np.asarray(closes)[:, order])
    if p.weights is None:
        return p
    back = np.empty_like(p.weights)
    back[order] = p.weights
    return Proposal(back, p.note, p.fallback)
