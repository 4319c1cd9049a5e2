"""Two-state Gaussian hidden Markov model of daily index log returns (calm vs high volatility).

Point in time by construction:
- parameters are refitted on a fixed expanding schedule (every `refit_every` sessions once
  `min_history` sessions exist), each fit using only returns up to its refit session;
- each fit is warm-started from the previous one with a fixed number of EM iterations, so the
  chain of fits is a deterministic function of the data (no random seeds needed);
- probabilities are **filtered** (forward recursion only, never smoothed): P(state_t | r_1..r_t).

The value for session t uses the parameters of the latest refit at or before t and the forward
filter run with them from the first return, so classifying data cut at t gives the same number
as the full-history pass.

The recursions are plain-Python loops over floats: for two states that is faster than numpy
per-step calls and keeps the module dependency-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class HmmParams:
    mu: tuple[float, float]
    sigma: tuple[float, float]  # sigma[1] > sigma[0]: state 1 is the high-volatility state
    p_stay: tuple[float, float]  # P(s_t = k | s_{t-1} = k)
    start: tuple[float, float]


@dataclass(frozen=True)
class HmmConfig:
    min_history: int = 504  # two years of returns before the first fit
    refit_every: int = 252  # then refit yearly
    first_iterations: int = 60
    warm_iterations: int = 8


def _emissions(r: list[float], p: HmmParams) -> tuple[list[float], list[float]]:
    """State densities per step, both divided by the larger one: an extreme return (a crash far
    outside both states) then still ranks the states instead of underflowing to 0/0. The
    common factor cancels in the normalised recursions."""
    x = np.asarray(r)
    logs = [
        -0.5 * ((x - p.mu[k]) / p.sigma[k]) ** 2 - math.log(p.sigma[k]) - 0.5 * _LOG_2PI
        for k in (0, 1)
    ]
    top = np.maximum(logs[0], logs[1])
    return np.exp(logs[0] - top).tolist(), np.exp(logs[1] - top).tolist()


def _forward(
    b0: list[float], b1: list[float], p: HmmParams
) -> tuple[list[float], list[float], float]:
    """Normalised forward pass: filtered P(state 1 | data so far) per step, and the
    log-likelihood up to the per-step factor `_emissions` removed."""
    s00, s11 = p.p_stay
    s01, s10 = 1.0 - s00, 1.0 - s11
    a0, a1 = p.start
    f1: list[float] = []
    scale: list[float] = []
    loglik = 0.0
    first = True
    for x0, x1 in zip(b0, b1, strict=True):
        if first:
            n0, n1 = a0 * x0, a1 * x1
            first = False
        else:
            n0 = (a0 * s00 + a1 * s10) * x0
            n1 = (a0 * s01 + a1 * s11) * x1
        c = n0 + n1
        if c <= 0.0 or c != c:  # an impossible observation under both states
            c = 1e-300
            n0, n1 = 0.5 * c, 0.5 * c
        a0, a1 = n0 / c, n1 / c
        f1.append(a1)
        scale.append(c)
        loglik += math.log(c)
    return f1, scale, loglik


def _em_step(r: np.ndarray, p: HmmParams) -> HmmParams:
    b0, b1 = _emissions(r.tolist(), p)
    f1, scale, _ = _forward(b0, b1, p)
    s00, s11 = p.p_stay
    s01, s10 = 1.0 - s00, 1.0 - s11
    n = len(b0)
    # Scaled backward pass.
    g0 = [0.0] * n
    g1 = [0.0] * n
    x00 = x01 = x10 = x11 = 0.0
    be0 = be1 = 1.0
    for t in range(n - 1, -1, -1):
        a1 = f1[t]
        a0 = 1.0 - a1
        g0[t], g1[t] = a0 * be0, a1 * be1
        if t == 0:
            break
        c = scale[t]
        e0, e1 = b0[t] * be0, b1[t] * be1
        p1 = f1[t - 1]
        p0 = 1.0 - p1
        x00 += p0 * s00 * e0 / c
        x01 += p0 * s01 * e1 / c
        x10 += p1 * s10 * e0 / c
        x11 += p1 * s11 * e1 / c
        be0 = (s00 * e0 + s01 * e1) / c
        be1 = (s10 * e0 + s11 * e1) / c
    gam0, gam1 = np.asarray(g0), np.asarray(g1)
    tot = gam0 + gam1
    gam0, gam1 = gam0 / tot, gam1 / tot
    mus, sigmas = [], []
    for g in (gam0, gam1):
        w = g.sum()
        mu = float((g * r).sum() / w)
        var = float((g * (r - mu) ** 2).sum() / w)
        mus.append(mu)
        sigmas.append(math.sqrt(max(var, 1e-10)))
    stay0 = x00 / max(x00 + x01, 1e-300)
    stay1 = x11 / max(x10 + x11, 1e-300)
    out = HmmParams(
        mu=(mus[0], mus[1]),
        sigma=(sigmas[0], sigmas[1]),
        p_stay=(min(max(stay0, 0.5), 0.9999), min(max(stay1, 0.5), 0.9999)),
        start=(float(gam0[0]), float(gam1[0])),
    )
    if out.sigma[0] > out.sigma[1]:  # keep state 1 the high-volatility one
        out = HmmParams(
            mu=(out.mu[1], out.mu[0]),
            sigma=(out.sigma[1], out.sigma[0]),
            p_stay=(out.p_stay[1], out.p_stay[0]),
            start=(out.start[1], out.start[0]),
        )
    return out


def initial_params(r: np.ndarray) -> HmmParams:
    """Deterministic start: calm state at 0.7x, stressed at 2x the sample volatility."""
    s = float(np.std(r)) or 0.01
    m = float(np.mean(r))
    return HmmParams(mu=(m, -m), sigma=(0.7 * s, 2.0 * s), p_stay=(0.98, 0.95), start=(0.8, 0.2))


def fit(r: np.ndarray, iterations: int, init: HmmParams | None = None) -> HmmParams:
    p = init or initial_params(r)
    for _ in range(iterations):
        p = _em_step(r, p)
    return p


def refit_points(n: int, cfg: HmmConfig) -> list[int]:
    """Return indices (into the returns array) after which a refit happens, in order."""
    return list(range(cfg.min_history - 1, n, cfg.refit_every))


def fit_schedule(r: np.ndarray, cfg: HmmConfig) -> list[tuple[int, HmmParams]]:
    """(first index the params apply to, params) for every refit that data up to len(r) allows."""
    out: list[tuple[int, HmmParams]] = []
    prev: HmmParams | None = None
    for end in refit_points(len(r), cfg):
        window = r[: end + 1]
        p = (
            fit(window, cfg.first_iterations)
            if prev is None
            else fit(window, cfg.warm_iterations, prev)
        )
        out.append((end, p))
        prev = p
    return out


def filtered_high_vol(r: np.ndarray, cfg: HmmConfig = HmmConfig()) -> np.ndarray:
    """P(high-volatility state at t | returns up to t) for every t; NaN before the first fit.

    `r` must be finite (the caller drops the first, undefined return)."""
    out = np.full(len(r), np.nan)
    schedule = fit_schedule(r, cfg)
    rl = r.tolist()
    for k, (start, p) in enumerate(schedule):
        stop = schedule[k + 1][0] if k + 1 < len(schedule) else len(r)
        # The filter is rerun from the first return with these params, up to the segment end.
        b0, b1 = _emissions(rl[:stop], p)
        f1, _, _ = _forward(b0, b1, p)
        out[start:stop] = f1[start:stop]
    return out


def last_params(r: np.ndarray, cfg: HmmConfig = HmmConfig()) -> HmmParams | None:
    schedule = fit_schedule(r, cfg)
    return schedule[-1][1] if schedule else None


def high_vol_state(
    close: pd.Series, cfg: HmmConfig = HmmConfig(), threshold: float = 0.5
) -> pd.Series:
    """The filtered HMM as a bull/bear classifier (the comparison's peer): True (bear) where
    P(high-volatility state | returns so far) > `threshold`; sessions before the first fit are
    left out."""
    r = np.diff(np.log(close.to_numpy(dtype="float64")))
    prob = np.r_[np.nan, filtered_high_vol(r, cfg)]
    known = ~np.isnan(prob)
    return pd.Series(prob[known] > threshold, index=close.index[known])
