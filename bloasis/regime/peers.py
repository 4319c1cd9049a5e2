"""A peer model for the regime model: the statistical jump model (JM) bull/bear classifier of
Shu, Yu & Mulvey (2024), "Downside risk reduction using regime-switching signals: a statistical
jump model approach" (arXiv 2402.05272), built on their `jumpmodels` package (0.1.1, the `eval`
extra). It exists to be compared with, so it follows the paper and the package's example as
closely as the point-in-time rules below allow, rather than being tuned here.

Point in time by construction:
- the features are causal exponentially weighted moments of the daily returns (each row uses
  only closes up to that row);
- the model is refitted on a fixed calendar schedule (the first session of each year, once
  `min_train_sessions` feature rows exist); each fit -- clipper, scaler and jump model -- sees
  only feature rows strictly before its refit date, and starts from a fresh, seeded model (no
  warm start from the previous fit), so it is a function of its training rows alone;
- the labels are **online** (filtered): the jump model's dynamic programme runs forward only,
  from the first training row to the end of the segment the fit labels, and the label of a
  session is the state minimising the accumulated cost up to that session -- never a smoothed
  (Viterbi back-traced) path, which would use later rows.

So the label of session t computed on the full history equals the label computed on the closes
cut at t (tests/test_regime_peers.py checks this).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

# The package's defaults made explicit: seeded k-means++ initialisations (a fixed int seed is
# re-created on every fit, so two runs are identical), clipping at 3 standard deviations as in
# the package's example.
_N_INIT: Final = 10
_RANDOM_STATE: Final = 0
_CLIP_STD: Final = 3.0
_REFIT_PERIODS: Final[dict[str, str]] = {"yearly": "Y", "quarterly": "Q", "monthly": "M"}
_COLUMNS: Final = ("bear", "bear_prob", "fit_date")


@dataclass(frozen=True)
class JumpModelConfig:
    """The jump model's settings. The defaults are the package example's discrete JM
    (λ = 50, two states, feature halflives of one week, one month and one quarter), fixed a
    priori: nothing here is chosen from the scores it is compared on."""

    jump_penalty: float = 50.0  # λ: the cost of a state switch, in units of the scaled features
    halflives: tuple[int, ...] = (5, 20, 60)  # EWM halflives of the features (sessions)
    min_train_sessions: int = 756  # ~3 years of returns before the first fit
    train_window_sessions: int | None = None  # None = expanding; else rolling window length
    refit: str = "yearly"  # refit on the first session of each calendar year
    # Run the package's E-step DP with `_dp_two_states` (bit-identical, tested): the 1990-2022
    # walk-forward takes ~4 s instead of ~36 s. False: the package's own, untouched.
    fast_dp: bool = True

    def __post_init__(self) -> None:
        """Reject settings the walk-forward cannot honour, before any work is done."""
        if not np.isfinite(self.jump_penalty) or self.jump_penalty < 0:
            raise ValueError(f"jump_penalty must be finite and >= 0, got {self.jump_penalty}")
        if not self.halflives or any(int(h) != h or h < 1 for h in self.halflives):
            raise ValueError(f"halflives must be positive integers, got {self.halflives}")
        if self.min_train_sessions < 2:
            raise ValueError(f"min_train_sessions must be >= 2, got {self.min_train_sessions}")
        if (
            self.train_window_sessions is not None
            and self.train_window_sessions < self.min_train_sessions
        ):
            raise ValueError(
                f"train_window_sessions ({self.train_window_sessions}) must be >= "
                f"min_train_sessions ({self.min_train_sessions})"
            )
        if self.refit not in _REFIT_PERIODS:
            raise ValueError(f"refit must be one of {sorted(_REFIT_PERIODS)}, got {self.refit!r}")


def _check_close(close: pd.Series) -> pd.Series:
    """The closes as float64 on a strictly increasing DatetimeIndex; bad input fails loudly
    because a silently dropped or reordered close would shift every later feature."""
    if not isinstance(close.index, pd.DatetimeIndex):
        raise ValueError("close must be indexed by session dates (a DatetimeIndex)")
    if not close.index.is_monotonic_increasing or not close.index.is_unique:
        raise ValueError("close index must be strictly increasing session dates")
    values = close.astype("float64")
    arr = values.to_numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"close has {int((~np.isfinite(arr)).sum())} missing or infinite values")
    if (arr <= 0).any():
        bad = values.index[arr <= 0][0]
        raise ValueError(f"closes must be positive; first non-positive close at {bad.date()}")
    return values


def jump_model_features(close: pd.Series, halflives: tuple[int, ...]) -> pd.DataFrame:
    """Causal features per session from the index closes (each row uses only closes <= that row):
    per halflife: EWM downside deviation (log), EWM mean return, EWM Sortino ratio -- as in the
    paper/package example.

    With r_t = close_t / close_{t-1} - 1 (simple daily return, as the package example) and pandas'
    `ewm(halflife=h)` (adjusted weights, starting at the first return), per halflife h:
    - `ret_{h}`     = EWM mean of r_t;
    - `dd_log_{h}`  = log DD_t, DD_t = sqrt(EWM mean of min(r_t, 0)^2) (downside deviation);
    - `sortino_{h}` = `ret_{h}` / DD_t.
    Rows start at the second close (the first return). While no negative return has been seen,
    DD is 0 and its log and the Sortino ratio are undefined: those leading rows are NaN.
    """
    c = _check_close(close)
    if not halflives:
        raise ValueError("halflives must not be empty")
    ret = c.pct_change().iloc[1:]
    downside_sq = ret.clip(upper=0.0) ** 2
    cols: dict[str, pd.Series] = {}
    for h in halflives:
        mean = ret.ewm(halflife=h).mean()
        dd = np.sqrt(downside_sq.ewm(halflife=h).mean())
        dd = dd.where(dd > 0)  # log(0) and x/0: undefined until the first negative return
        cols[f"ret_{h}"] = mean
        cols[f"dd_log_{h}"] = np.log(dd)
        cols[f"sortino_{h}"] = mean / dd
    return pd.DataFrame(cols, index=ret.index)


def _refit_positions(index: pd.DatetimeIndex, refit: str, first: int) -> list[int]:
    """Positions (in the feature rows) of the first session of each calendar period with at
    least `first` rows before it. Row 0 never qualifies: nothing precedes it."""
    periods = index.to_period(_REFIT_PERIODS[refit]).asi8
    starts = np.flatnonzero(periods[1:] != periods[:-1]) + 1
    return [int(p) for p in starts if p >= first]


def _jumpmodels() -> tuple[Any, Any]:
    """The `jumpmodels.jump` and `jumpmodels.preprocess` modules, imported lazily: the package
    is an optional dependency (the `eval` extra). Importing it sets numpy's global error state
    (`np.seterr(divide="ignore", invalid="ignore")` in jumpmodels.utils.calculation); that is
    undone here so the rest of the process keeps numpy's defaults, and the fits run under a
    local `np.errstate` instead. (`unused-ignore`: the project's mypy config already ignores
    missing imports; the narrow ignore is for configs that do not.)"""
    saved = np.geterr()
    try:
        import jumpmodels.jump as jump  # type: ignore[import-untyped, unused-ignore]
        import jumpmodels.preprocess as preprocess  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the jump model peer needs the `jumpmodels` package: pip install -e '.[eval]'"
        ) from exc
    finally:
        np.seterr(**saved)
    return jump, preprocess


def _dp_two_states(
    loss_mx: np.ndarray, penalty_mx: np.ndarray, return_value_mx: bool = False
) -> tuple[np.ndarray, float] | np.ndarray:
    """`jumpmodels.jump.dp` (the E step's dynamic programme) for two states, in plain floats.

    The package's version makes two numpy calls per session on 2x2 arrays; over a 30-year
    walk-forward (30 fits x 10 initialisations x ~9 E steps x up to 8,000 sessions) that is
    ~90% of the run time. This is the same recursion with the same IEEE additions and the same
    tie-breaking (the first state wins a tie, as `argmin` does), so its values and paths are
    identical to the package's, bit for bit (tests/test_regime_peers.py checks that against the
    package's `dp`); only the per-step overhead is gone."""
    n_s, n_c = loss_mx.shape
    if n_c != 2 or n_s == 0:
        raise ValueError(f"two states and at least one row expected, got shape {loss_mx.shape}")
    loss = np.where(np.isnan(loss_mx), np.inf, loss_mx)  # as the package: NaN -> unreachable
    l0: list[float] = loss[:, 0].tolist()
    l1: list[float] = loss[:, 1].tolist()
    (p00, p01), (p10, p11) = np.asarray(penalty_mx, dtype="float64").tolist()
    v0s = [0.0] * n_s
    v1s = [0.0] * n_s
    v0, v1 = l0[0], l1[0]
    v0s[0], v1s[0] = v0, v1
    for t in range(1, n_s):
        a, b = v0 + p00, v1 + p10  # into state 0, from 0 / from 1
        c, d = v0 + p01, v1 + p11  # into state 1
        v0 = l0[t] + (a if a <= b else b)
        v1 = l1[t] + (c if c <= d else d)
        v0s[t], v1s[t] = v0, v1
    if return_value_mx:
        return np.column_stack([np.asarray(v0s), np.asarray(v1s)])
    assign = np.empty(n_s, dtype=int)
    k = 0 if v0s[-1] <= v1s[-1] else 1
    assign[-1] = k
    value_opt = v0s[-1] if k == 0 else v1s[-1]
    pen = ((p00, p01), (p10, p11))
    for t in range(n_s - 1, 0, -1):
        k = 0 if v0s[t - 1] + pen[0][k] <= v1s[t - 1] + pen[1][k] else 1
        assign[t - 1] = k
    return assign, float(value_opt)


_PATCH_LOCK = threading.Lock()


@contextmanager
def _fast_dp(jump: Any) -> Iterator[None]:
    """Swap `_dp_two_states` in for the package's `dp` while our fits run (the E step looks
    `dp` up in `jumpmodels.jump` at call time), falling back to the package's for any other
    shape, and put the package's back afterwards. The lock serialises overlapping callers, so
    the function read and restored is always the package's own; the fits hold the GIL anyway,
    so nothing is lost."""
    with _PATCH_LOCK:
        package_dp = jump.dp

        def dp(
            loss_mx: np.ndarray, penalty_mx: np.ndarray, return_value_mx: bool = False
        ) -> tuple[np.ndarray, float] | np.ndarray:
            if loss_mx.ndim == 2 and loss_mx.shape[1] == 2 and loss_mx.shape[0] > 0:
                return _dp_two_states(loss_mx, penalty_mx, return_value_mx)
            out: tuple[np.ndarray, float] | np.ndarray = package_dp(
                loss_mx, penalty_mx, return_value_mx
            )
            return out

        jump.dp = dp
        try:
            yield
        finally:
            jump.dp = package_dp


def jump_model_bear(close: pd.Series, config: JumpModelConfig = JumpModelConfig()) -> pd.DataFrame:
    """Walk-forward: at each refit date D (first session of each year once min_train_sessions of
    features exist), fit the scaler/clipper and the JumpModel on feature rows strictly before D
    only, identify the bear state as the state with the lower mean return in the training fit,
    then label the sessions from D up to the next refit with `predict_online` (online = filtered,
    uses only rows up to each session; the online prediction is run on data that ends at the
    segment's end, never on rows after it).

    Returns a frame indexed by session (only sessions that have a label), columns: `bear`
    (bool), `bear_prob` (float in [0,1] from `predict_proba_online`; for the discrete model it is
    0/1, the package's hard online assignment), `fit_date` (the refit date whose model labelled
    the row).

    Details:
    - training rows: the feature rows before D (expanding), or the last
      `train_window_sessions` of them (rolling); leading rows with undefined features (before the
      first negative return) are not counted;
    - preprocessing, as the package example: `DataClipperStd(mul=3)` then `StandardScalerPD`,
      both fitted on the training rows and applied unchanged to the rows labelled;
    - the bear state: the fit is given each training row's same-session return and sorts its
      states by decreasing mean return (`sort_by="ret"`); the state whose training sessions have
      the lower mean daily return is bear. (The package example sorts by cumulative return,
      mean x frequency; the mean is used here so a rare but deep bear state stays bear.) If the
      fit leaves a state empty -- one regime over the whole training span -- there is no bear
      state and the segment is labelled bull;
    - the online pass starts at the first training row (the same rows the fit saw, as burn-in
      for the filter) and ends at the last session of the segment; only the segment's rows are
      returned.

    Raises ValueError for fewer than `min_train_sessions` returns (too short for even one fit)
    and for non-positive, missing or unordered closes.
    """
    c = _check_close(close)
    n_returns = len(c) - 1
    if n_returns < config.min_train_sessions:
        raise ValueError(
            f"the jump model needs at least {config.min_train_sessions} returns "
            f"({config.min_train_sessions + 1} sessions) before its first fit; "
            f"got {len(c)} sessions"
        )
    feats = jump_model_features(c, config.halflives)
    defined = feats.notna().all(axis=1).to_numpy()
    if not defined.any():
        raise ValueError("no session has defined features (no negative return in the closes)")
    first_defined = int(np.argmax(defined))
    if not defined[first_defined:].all():  # pragma: no cover - impossible for valid closes
        raise ValueError("features became undefined after their first defined row")
    feats = feats.iloc[first_defined:]
    ret = c.pct_change().reindex(feats.index)
    index = pd.DatetimeIndex(feats.index)
    refits = _refit_positions(index, config.refit, config.min_train_sessions)

    jump, preprocess = _jumpmodels()

    bear = np.zeros(len(feats), dtype=bool)
    bear_prob = np.zeros(len(feats), dtype="float64")
    fit_date = np.full(len(feats), np.datetime64("NaT"), dtype="datetime64[ns]")
    labelled = np.zeros(len(feats), dtype=bool)
    bounds = [*refits, len(feats)]
    for start, end in itertools.pairwise(bounds):
        lo = 0 if config.train_window_sessions is None else start - config.train_window_sessions
        lo = max(lo, 0)
        clipper = preprocess.DataClipperStd(mul=_CLIP_STD)
        scaler = preprocess.StandardScalerPD()
        x_train = scaler.fit_transform(clipper.fit_transform(feats.iloc[lo:start]))
        # Rows lo..end-1: the training rows as the filter's burn-in, then the segment. The
        # forward recursion makes each row's state depend on rows up to it only.
        x_online = scaler.transform(clipper.transform(feats.iloc[lo:end]))
        model = jump.JumpModel(
            n_components=2,
            jump_penalty=config.jump_penalty,
            cont=False,
            random_state=_RANDOM_STATE,
            n_init=_N_INIT,
        )
        fast = _fast_dp(jump) if config.fast_dp else nullcontext()
        with np.errstate(divide="ignore", invalid="ignore"), fast:
            model.fit(x_train, ret_ser=ret.iloc[lo:start], sort_by="ret")
            state_ret = np.asarray(model.ret_, dtype="float64")
            labels = np.asarray(model.predict_online(x_online), dtype=int)[start - lo :]
            proba = model.predict_proba_online(x_online).to_numpy()[start - lo :]
        if np.isfinite(state_ret).all():
            bear_state = int(np.argmin(state_ret))  # == 1 after sort_by="ret"
            bear[start:end] = labels == bear_state
            bear_prob[start:end] = proba[:, bear_state]
        fit_date[start:end] = index[start].to_datetime64()
        labelled[start:end] = True

    out = pd.DataFrame(
        {"bear": bear, "bear_prob": bear_prob, "fit_date": fit_date},
        index=index,
        columns=list(_COLUMNS),
    )
    return out.loc[labelled]
