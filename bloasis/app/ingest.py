"""The daily market-data ingest as a plain service: live providers -> the point-in-time store.

What it does, in order (the `market-data-ingest` flow, `bloasis data ingest`, the benchmarks and
the tests all call `run_ingest`):

1. **Session-complete guard**: the target is the newest session closed at least
   BLOASIS_SESSION_SETTLE_SECONDS ago (`bloasis.calendar`, early closes included). Nothing
   dated after it is kept, so an in-progress bar can never be stored.
2. **One ingest at a time**: a PostgreSQL advisory lock; a second ingest waits, then finds the
   work done and fetches nothing.
3. **History first**: an empty store gets the embedded 1990–2022 dataset as its first vintage.
4. **Incremental plan**: per series and symbol, from its last stored date (minus
   BLOASIS_REVISION_LOOKBACK_SESSIONS, to see revisions) to the target; a symbol or series the
   store lacks starts at BLOASIS_LIVE_HISTORY_START. When the index is current, nothing is
   fetched.
5. **Fetch** (bounded concurrency; each provider's client retries, honours 429 Retry-After and
   rate-limits itself): Yahoo ^GSPC, ^VIX and every stock of BLOASIS_LIVE_UNIVERSE; FRED
   VIXCLS, DGS10, DGS2, BAA, AAA and SP500.
6. **Check**: validation rules of every source (quarantine as configured); the index must have
   every NYSE session up to the target; where live data joins stored history (the splice),
   the provider's unadjusted close must match the stored one (refused otherwise, naming symbol,
   session and both values); the index level (Yahoo vs FRED SP500) and VIX (FRED vs Yahoo) are
   cross-checked: a disagreement is a warning naming both values, never a silent pick.
7. **Write** everything in one transaction (nothing written on any error): first versions,
   revisions as new versions (`bloasis.store.marketdata`).

Prices: Yahoo's `close` is split-adjusted; the store keeps the real (unadjusted) prices, undoing
the splits the provider reports, so a split is never mistaken for a revision. Its adjusted close
is chained onto the stored one at the splice (the stored total-return series continues with the
provider's daily returns), so the adjusted history has no jump and never needs rewriting.
"""

from __future__ import annotations

import functools
import logging
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from bloasis import calendar, progress
from bloasis.clock import market_now
from bloasis.config import Settings
from bloasis.marketdata.types import DataValidationError
from bloasis.marketdata.validate import (
    CREDIT_SYMBOL,
    INDEX_SYMBOL,
    UST2Y_SYMBOL,
    UST10Y_SYMBOL,
    VIX_SYMBOL,
    validate_bars,
)
from bloasis.pipeline import advisory_lock
from bloasis.store import marketdata as md_store
from bloasis.store.db import get_engine

log = logging.getLogger(__name__)

PROVIDERS = ("fred", "yahoo")
YAHOO_INDEX, YAHOO_VIX = "^GSPC", "^VIX"
# Store series names (what `DatabaseSource` reads) <- FRED series ids.
VIX_SERIES, SP500_SERIES = "VIX", "SP500"
FRED_VIX, FRED_SP500 = "VIXCLS", "SP500"
FRED_UST = {UST10Y_SYMBOL: "DGS10", UST2Y_SYMBOL: "DGS2"}
FRED_CREDIT = ("BAA", "AAA")
_LOCK_KEY = (zlib.crc32(b"bloasis:md-ingest") - (1 << 31), 0)
_BAR_FIELDS = ("open", "high", "low", "close", "volume")


class IngestError(RuntimeError):
    """The ingest failed; nothing was written. The message names the provider, the series and
    the session(s) concerned."""


@dataclass(frozen=True)
class IngestRequest:
    """`since`: fetch every series from this date (a re-check or backfill; default:
    incremental). `providers`: some of `PROVIDERS` (default: BLOASIS_LIVE_PROVIDERS)."""

    since: date | None = None
    providers: tuple[str, ...] | None = None

    def resolved(self, settings: Settings) -> IngestRequest:
        """This request with its providers settled (and checked)."""
        providers = self.providers or tuple(settings.live_providers.split(","))
        if not providers or set(providers) - set(PROVIDERS):
            raise ValueError(f"providers must be some of {PROVIDERS}, got {providers}")
        return IngestRequest(self.since, providers)

    @property
    def names(self) -> tuple[str, ...]:
        assert self.providers is not None, "resolve the request first"
        return self.providers


@dataclass
class IngestOutcome:
    status: str  # "ingested" | "up to date"
    target: date
    new_sessions: list[date] = field(default_factory=list)
    ingest_id: int | None = None
    seeded: int = 0  # rows of the embedded vintage loaded first (an empty store)
    bars: dict[str, int] = field(default_factory=dict)  # inserted / revised / unchanged
    series: dict[str, int] = field(default_factory=dict)
    revisions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    fetched: dict[str, int] = field(default_factory=dict)  # provider -> requests
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "target": self.target.isoformat(),
            "new_sessions": [d.isoformat() for d in self.new_sessions],
            "ingest_id": self.ingest_id,
            "seeded": self.seeded,
            "bars": self.bars,
            "series": self.series,
            "revisions": self.revisions[:50],
            "warnings": self.warnings[:50],
            "quarantined": self.quarantined[:50],
            "fetched": self.fetched,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# --- plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fetch:
    provider: str
    series: str  # the provider's series id or ticker
    key: str  # what it feeds in the store (symbol or series name)
    start: date
    end: date
    # An empty answer is data (nothing published in the span: a series that ended, VIX on a
    # replay past the embedded data) rather than a provider failure.
    allow_empty: bool = False


@functools.lru_cache(maxsize=256)
def _back(d: date, sessions: int) -> date:
    """The session `sessions` sessions before `d` (most symbols share their last date)."""
    for _ in range(sessions):
        d = calendar.previous_session(d)
    return d


def _plan(
    settings: Settings,
    req: IngestRequest,
    last: dict[str, md_store.LastDate],
    members: list[tuple[str, str]],  # (symbol, yahoo ticker)
    target: date,
) -> list[_Fetch]:
    lookback = settings.revision_lookback_sessions
    first = settings.live_history_start

    def start_of(key: str, *, monthly: bool = False) -> date:
        if req.since is not None:
            return req.since
        got = last.get(key)
        if got is None:
            return min(first, target)
        if monthly:  # a month's value is revised for a few months: look back a quarter
            return (got.last_date.replace(day=1) - timedelta(days=92)).replace(day=1)
        return _back(got.last_date, lookback) if got.last_date <= target else target

    out: list[_Fetch] = []
    idx_start = start_of(INDEX_SYMBOL)
    if "yahoo" in req.names:
        out.append(_Fetch("yahoo", YAHOO_INDEX, INDEX_SYMBOL, idx_start, target))
        out.append(_Fetch("yahoo", YAHOO_VIX, VIX_SERIES, start_of(VIX_SERIES), target, True))
        out += [
            _Fetch("yahoo", yahoo, symbol, start_of(symbol), target) for symbol, yahoo in members
        ]
    if "fred" in req.names:
        out.append(_Fetch("fred", FRED_VIX, VIX_SERIES, start_of(VIX_SERIES), target, True))
        out.append(_Fetch("fred", FRED_SP500, SP500_SERIES, idx_start, target, True))
        for key, sid in FRED_UST.items():
            # Observations are dated the day before they are published (see `_ust_rows`).
            out.append(_Fetch("fred", sid, key, start_of(key) - timedelta(days=7), target, True))
        for sid in FRED_CREDIT:
            out.append(
                _Fetch(
                    "fred", sid, CREDIT_SYMBOL, start_of(CREDIT_SYMBOL, monthly=True), target, True
                )
            )
    return out


# --- fetch -----------------------------------------------------------------------------------
def _providers(settings: Settings, wanted: tuple[str, ...]) -> dict[str, Any]:
    from bloasis.marketdata.providers.fred import FredProvider
    from bloasis.marketdata.providers.yahoo import YahooProvider

    out: dict[str, Any] = {}
    if "fred" in wanted:
        out["fred"] = FredProvider.from_settings(settings)
    if "yahoo" in wanted:
        out["yahoo"] = YahooProvider.from_settings(settings)
    return out


def _fetch_all(
    plan: list[_Fetch], providers: dict[str, Any], concurrency: int
) -> dict[_Fetch, Any]:
    """Every fetch of the plan (results or the ProviderError each raised), `concurrency` at a
    time; progress reported as `fetch`. Anything else a fetch raises is a bug: it propagates."""
    from bloasis.marketdata.providers import ProviderError

    def one(f: _Fetch) -> Any:
        try:
            if f.provider == "fred":
                return providers["fred"].observations(
                    f.series, f.start, f.end, allow_empty=f.allow_empty
                )
            return providers["yahoo"].daily_bars(
                f.series, f.start, f.end, allow_empty=f.allow_empty
            )
        except ProviderError as exc:  # reported per fetch; the caller decides what is fatal
            return exc

    out: dict[_Fetch, Any] = {}
    progress.report("fetch", 0, len(plan))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for i, (f, got) in enumerate(zip(plan, pool.map(one, plan), strict=True)):
            out[f] = got
            if (i + 1) % 50 == 0 or i + 1 == len(plan):
                progress.report("fetch", i + 1, len(plan))
    return out


# --- transform and check -----------------------------------------------------------------------
def _unsplit(bars: Any) -> dict[str, np.ndarray]:
    """The provider's split-adjusted OHLCV back to the real prices of each session (what was
    traded that day): prices times, volume divided by, the splits after it."""
    sessions = np.asarray(bars.sessions, dtype="datetime64[D]")
    factor = np.ones(len(sessions))
    for ex_date, ratio in bars.splits:
        factor[sessions < np.datetime64(ex_date, "D")] *= float(ratio)
    out = {f: np.asarray(getattr(bars, f), dtype=np.float64) * factor for f in _BAR_FIELDS[:4]}
    out["volume"] = np.asarray(bars.volume, dtype=np.float64) / factor
    out["adj_close"] = np.asarray(bars.adj_close, dtype=np.float64)
    return out


@dataclass(frozen=True)
class _Block:
    """One symbol's store rows as arrays: a DataFrame per symbol would cost about a
    millisecond each (half a second for 500 symbols); the blocks become one frame at the end."""

    symbol: str
    sessions: list[date]
    cols: dict[str, np.ndarray]  # _BAR_FIELDS and adj_close


@dataclass
class _Rows:
    bars: list[_Block] = field(default_factory=list)
    series: list[pd.DataFrame] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    dropped: set[tuple[str, date]] = field(default_factory=set)  # bad bars (quarantine)

    def bars_frame(self) -> pd.DataFrame:
        """Every bar in `write_bars`' format, without the dropped ones."""
        blocks = [b for b in self.bars if b.sessions]
        if not blocks:
            return pd.DataFrame()
        frame = pd.DataFrame(
            {
                "symbol": np.repeat([b.symbol for b in blocks], [len(b.sessions) for b in blocks]),
                "session": [d for b in blocks for d in b.sessions],
                **{k: np.concatenate([b.cols[k] for b in blocks]) for k in blocks[0].cols},
                "source": "yahoo",
            }
        )
        if self.dropped:
            bad = [(s, d) in self.dropped for s, d in zip(frame["symbol"], frame["session"],
                                                          strict=True)]  # fmt: skip
            frame = frame[~np.asarray(bad, dtype=bool)].reset_index(drop=True)
        return frame


def _bar_rows(
    f: _Fetch,
    bars: Any,
    stored: pd.DataFrame,
    target: date,
    tolerance: float,
) -> _Block:
    """The store rows of one symbol's fetched bars: up to the target, real prices, adjusted
    close chained onto the stored series at the splice; already-stored sessions only when the
    stored value came from this provider (a revision check like with like). Raises
    IngestError on a discontinuity at the splice."""
    sessions = [d for d in bars.sessions if d <= target]
    n = len(sessions)
    if n == 0:
        return _Block(f.key, [], {})
    v = {k: a[:n] for k, a in _unsplit(bars).items()}
    adj = v["adj_close"]
    if not np.isfinite(adj).any():  # a provider without adjusted closes: the close it is
        adj = v["close"].copy()
    keep = np.ones(n, dtype=bool)
    if not stored.empty:
        st_close = dict(zip(stored["session"], stored["close"].astype(float), strict=True))
        st_adj = dict(zip(stored["session"], stored["adj_close"].astype(float), strict=True))
        st_src = dict(zip(stored["session"], stored["source"].astype(str), strict=True))
        common = [d for d in sessions if np.isfinite(st_close.get(d, np.nan))]
        if not common:
            raise IngestError(
                f"yahoo {f.series} {f.start}..{f.end}: no session in common with the stored "
                f"history of {f.key} (stored up to {max(st_close)}): cannot splice"
            )
        b = max(common)
        i = sessions.index(b)
        if st_src[b] != "yahoo":
            # The splice: where this provider's data joins history from another source, the
            # real close of the joining session must match (splits undone).
            want, got = st_close[b], float(v["close"][i])
            gap = abs(got / want - 1.0) if np.isfinite(got) else np.inf
            if gap > tolerance:
                raise IngestError(
                    f"splice refused: {f.key} {b}: stored close {want:.6g} ({st_src[b]}), "
                    f"yahoo {got:.6g} (unadjusted{', splits undone' if bars.splits else ''}): "
                    f"a {gap:.2%} discontinuity, over BLOASIS_SPLICE_TOLERANCE={tolerance:g}"
                )
        # Continue the stored adjusted series from the joining session b: the stored
        # adjustment factor there (adjusted / real close), times the provider's factor moves
        # since b (its dividends and splits after b). Written through factors, not one ratio of
        # adjusted closes, so a revised close at b keeps its stored factor.
        k = st_adj[b] * float(v["close"][i]) / (st_close[b] * float(adj[i]))
        adj = adj * k
        # Sessions stored from another source stay as they are: no cross-source revisions.
        keep = np.asarray([st_src.get(d, "yahoo") == "yahoo" for d in sessions], dtype=bool)
    cols = {k: v[k][keep] for k in _BAR_FIELDS} | {"adj_close": adj[keep]}
    return _Block(f.key, [d for d, k in zip(sessions, keep, strict=True) if k], cols)


def _obs_frame(obs: list[Any], *, last: date) -> pd.Series:
    """FRED observations with a value, dated up to `last`, as a Series by date."""
    dates = [o.date for o in obs if o.value is not None and o.date <= last]
    vals = [float(o.value) for o in obs if o.value is not None and o.date <= last]
    return pd.Series(vals, index=pd.Index(dates), dtype=np.float64)


def _vix_rows(
    fred: list[Any] | None,
    yahoo: Any | None,
    stored: pd.DataFrame,
    target: date,
    tolerance: float,
    warnings: list[str],
) -> pd.DataFrame:
    """VIX by session: FRED VIXCLS where it has the session, else Yahoo ^VIX; both present
    and apart by more than the tolerance is a warning naming both. A session already stored
    is only compared with the same source (a revision), the other is a cross-check."""
    f = _obs_frame(fred or [], last=target)
    y = pd.Series(dtype=np.float64)
    if yahoo is not None:
        n = sum(1 for d in yahoo.sessions if d <= target)
        y = pd.Series(
            np.asarray(yahoo.close[:n], dtype=np.float64), index=pd.Index(yahoo.sessions[:n])
        ).dropna()
    days = sorted(d for d in set(f.index) | set(y.index) if calendar.is_session(d))
    st = stored.set_index("obs_date") if not stored.empty else pd.DataFrame()
    rows = []
    for d in days:
        fv, yv = f.get(d), y.get(d)
        if fv is not None and yv is not None and abs(yv / fv - 1.0) > tolerance:
            warnings.append(
                f"VIX {d}: fred VIXCLS {fv:.4g} vs yahoo ^VIX {yv:.4g}"
                f" ({abs(yv / fv - 1.0):.1%} apart, over BLOASIS_CROSSCHECK_TOLERANCE)"
            )
        if d in st.index:
            src = str(st.at[d, "source"])
            value = fv if src == "fred" else yv if src == "yahoo" else None
            if value is not None:
                rows.append((d, value, src))
            continue
        if fv is not None:
            rows.append((d, fv, "fred"))
        elif yv is not None:
            rows.append((d, yv, "yahoo"))
    return pd.DataFrame(
        {
            "series": VIX_SERIES,
            "obs_date": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "source": [r[2] for r in rows],
        }
    )


def _ust_rows(key: str, obs: list[Any], target: date) -> pd.DataFrame:
    """A Treasury yield observed on day d is published the next business day (H.15): stored
    dated by the first session after d, like the embedded series (dated by publication)."""
    s = _obs_frame(obs, last=target)
    pub = [calendar.next_session(d) for d in s.index]
    keep = [i for i, p in enumerate(pub) if p <= target]
    return pd.DataFrame(
        {
            "series": key,
            "obs_date": [pub[i] for i in keep],
            "value": s.to_numpy()[keep],
            "source": "fred",
        }
    ).drop_duplicates(subset=["obs_date"], keep="last")


def _credit_rows(baa: list[Any], aaa: list[Any], target: date) -> pd.DataFrame:
    """Moody's BAA − AAA by month (dated by the month measured; the reader applies the
    publication lag), only months with both."""
    b, a = _obs_frame(baa, last=target), _obs_frame(aaa, last=target)
    both = b.index.intersection(a.index)
    return pd.DataFrame(
        {
            "series": CREDIT_SYMBOL,
            "obs_date": list(both),
            "value": (b[both] - a[both]).to_numpy(),
            "source": "fred",
        }
    )


def _validate(rows: _Rows, quarantine: bool) -> None:
    """The rules every source follows (`validate_bars`): strict raises naming symbol, date and
    rule; quarantine drops the bad rows and records them."""
    series_symbol = {VIX_SERIES: VIX_SYMBOL}
    bars = rows.bars_frame()
    long = [bars.rename(columns={"session": "date"})] if len(bars) else []
    for df in rows.series:
        if df.empty or df["series"].iloc[0] == SP500_SERIES:
            continue
        name = series_symbol.get(str(df["series"].iloc[0]), str(df["series"].iloc[0]))
        long.append(pd.DataFrame({"date": df["obs_date"], "symbol": name, "close": df["value"]}))
    if not long:
        return
    frame = pd.concat(long, ignore_index=True)
    frame["date"] = pd.to_datetime(frame["date"])
    _, issues = validate_bars(frame, quarantine=quarantine, context="live ingest")
    if not issues:
        return
    bad = {(i.symbol, i.date) for i in issues if i.date is not None}
    rows.quarantined += [str(i) for i in issues]
    rows.dropped |= bad
    for k, df in enumerate(rows.series):
        if not df.empty:
            name = series_symbol.get(str(df["series"].iloc[0]), str(df["series"].iloc[0]))
            mask = [(name, d) not in bad for d in df["obs_date"]]
            rows.series[k] = df[mask].reset_index(drop=True)


# --- the service -----------------------------------------------------------------------------
def _failed(fetches: dict[_Fetch, Any], where: Callable[[_Fetch], bool]) -> list[str]:
    return [
        f"{f.provider} {f.series} {f.start}..{f.end}: {getattr(e, 'reason', e)}"
        for f, e in fetches.items()
        if where(f) and isinstance(e, Exception)
    ]


def _got(fetches: dict[_Fetch, Any], provider: str, series: str) -> Any:
    for f, v in fetches.items():
        if f.provider == provider and f.series == series and not isinstance(v, Exception):
            return v
    return None


def _same_source_only(rows: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Drop the rows of dates the store has from another source: values of two sources are
    compared as a cross-check, never stored as a revision of each other."""
    if rows.empty or stored.empty:
        return rows
    st = stored[stored["series"] == rows["series"].iloc[0]].set_index("obs_date")["source"]
    other = [
        d in st.index and st[d] != src
        for d, src in zip(rows["obs_date"], rows["source"], strict=True)
    ]
    return rows[~np.asarray(other, dtype=bool)].reset_index(drop=True)


def _staleness(rows: _Rows, stored: pd.DataFrame, target: date, limit: int = 5) -> None:
    """A daily series whose newest value is more than `limit` sessions before the target
    (the provider published nothing newer) is a warning: the regime then reads it as
    unavailable after BLOASIS's staleness limit (or uses the VIX proxy)."""
    newest: dict[str, date] = {}
    for df in [stored, *rows.series]:
        if not df.empty:
            for key, d in df.groupby("series")["obs_date"].max().items():
                newest[str(key)] = max(d, newest.get(str(key), d))
    for key in (VIX_SERIES, UST10Y_SYMBOL, UST2Y_SYMBOL):
        last = newest.get(key)
        behind = len(calendar.session_dates(last, target)) - 1 if last else None
        if behind is None or behind > limit:
            rows.warnings.append(
                f"{key}: newest value {last or 'none'}"
                + (f", {behind} sessions before {target}" if behind is not None else "")
                + " (no provider published a newer one)"
                + (": the regime uses the realised-volatility proxy" if key == VIX_SERIES else "")
            )


def _transform(
    settings: Settings,
    fetches: dict[_Fetch, Any],
    stored_bars: pd.DataFrame,
    stored_series: pd.DataFrame,
    target: date,
    last_index: date | None,
) -> _Rows:
    """Fetched answers -> store rows, with every check of step 6 (module docstring)."""
    from bloasis.marketdata.providers import SymbolNotFound

    rows = _Rows()
    # The stored bars of each symbol, split once (not filtered per symbol).
    empty = stored_bars.iloc[:0]
    by_symbol = dict(tuple(stored_bars.groupby("symbol", sort=False))) if len(stored_bars) else {}
    tol = settings.crosscheck_tolerance
    # The index: required, and complete up to the target.
    idx_fetch = next((f for f in fetches if f.key == INDEX_SYMBOL and f.provider == "yahoo"), None)
    index_close: pd.Series | None = None
    if idx_fetch is not None:
        got = fetches[idx_fetch]
        if isinstance(got, Exception):
            raise IngestError(
                f"the index is required: {_failed(fetches, lambda f: f is idx_fetch)[0]}"
            )
        block = _bar_rows(idx_fetch, got, by_symbol.get(INDEX_SYMBOL, empty), target,
                          settings.splice_tolerance)  # fmt: skip
        want = calendar.session_dates(
            calendar.next_session(last_index) if last_index else idx_fetch.start, target
        )
        have = set(block.sessions)
        missing = [d for d in want if d not in have and d > (last_index or date.min)]
        if missing:
            raise IngestError(
                f"yahoo {YAHOO_INDEX} {idx_fetch.start}..{target}: no bar for session(s) "
                f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''} "
                "(the index must have every NYSE session; retry later)"
            )
        rows.bars.append(block)
        index_close = pd.Series(block.cols.get("close", []), index=pd.Index(block.sessions),
                                dtype=np.float64)  # fmt: skip
    # Stocks: a symbol the provider does not know is left out (delisted, renamed) with a
    # warning; other failures fail the ingest unless BLOASIS_QUARANTINE is on.
    for f, got in fetches.items():
        if f.provider != "yahoo" or f.key in (INDEX_SYMBOL, VIX_SERIES):
            continue
        if isinstance(got, Exception):
            why = f"{f.provider} {f.series} {f.start}..{f.end}: {getattr(got, 'reason', got)}"
            if isinstance(got, SymbolNotFound) or settings.quarantine:
                rows.quarantined.append(why)
                continue
            raise IngestError(why + " (BLOASIS_QUARANTINE=true leaves such a symbol out)")
        try:
            stored = by_symbol.get(f.key, empty)
            rows.bars.append(_bar_rows(f, got, stored, target, settings.splice_tolerance))
        except IngestError as exc:
            if not settings.quarantine:
                raise
            rows.quarantined.append(str(exc))
    # VIX from both providers; one may fail (a warning), not both.
    vix_fetches = [f for f in fetches if f.key == VIX_SERIES]
    if vix_fetches:
        bad = _failed(fetches, lambda f: f.key == VIX_SERIES)
        if len(bad) == len(vix_fetches):
            raise IngestError("VIX unavailable from every provider: " + "; ".join(bad))
        rows.warnings += [f"VIX cross-check source unavailable: {b}" for b in bad]
        stored_vix = stored_series[stored_series["series"] == VIX_SERIES] \
            if not stored_series.empty else stored_series  # fmt: skip
        rows.series.append(
            _vix_rows(
                _got(fetches, "fred", FRED_VIX),
                _got(fetches, "yahoo", YAHOO_VIX),
                stored_vix,
                target,
                tol,
                rows.warnings,
            )
        )
    # FRED: Treasury yields and Moody's spread are required inputs of the regime.
    fred = [f for f in fetches if f.provider == "fred" and f.key != VIX_SERIES]
    if fred:
        required = _failed(fetches, lambda f: f in fred and f.key != SP500_SERIES)
        if required:
            raise IngestError("; ".join(required))
        for key, sid in FRED_UST.items():
            ust = _ust_rows(key, _got(fetches, "fred", sid), target)
            rows.series.append(_same_source_only(ust, stored_series))
        credit = _credit_rows(_got(fetches, "fred", "BAA"), _got(fetches, "fred", "AAA"), target)
        rows.series.append(_same_source_only(credit, stored_series))
        sp = _got(fetches, "fred", FRED_SP500)
        if sp is None:
            rows.warnings += [
                f"index cross-check source unavailable: {b}"
                for b in _failed(fetches, lambda f: f.key == SP500_SERIES)
            ]
        else:
            s = _obs_frame(sp, last=target)
            rows.series.append(
                pd.DataFrame(
                    {
                        "series": SP500_SERIES,
                        "obs_date": list(s.index),
                        "value": s.to_numpy(),
                        "source": "fred",
                    }
                )
            )
            if index_close is not None:
                both = s.index.intersection(index_close.index)
                gap = (index_close[both] / s[both] - 1.0).abs()
                for d in gap[gap > tol].index:
                    rows.warnings.append(
                        f"index {d}: yahoo ^GSPC close {index_close[d]:.6g} vs fred SP500 "
                        f"{s[d]:.6g} ({gap[d]:.2%} apart, over BLOASIS_CROSSCHECK_TOLERANCE)"
                    )
    _validate(rows, settings.quarantine)
    _staleness(rows, stored_series, target)
    lagging = sorted(
        f.key for f, got in fetches.items()
        if f.provider == "yahoo" and f.key not in (INDEX_SYMBOL, VIX_SERIES)
        and not isinstance(got, Exception) and target not in got.sessions
    )  # fmt: skip
    if lagging:
        rows.warnings.append(
            f"{len(lagging)} symbol(s) without a bar for {target} yet ({', '.join(lagging[:8])}"
            f"{' ...' if len(lagging) > 8 else ''}): the next ingest fetches them again"
        )
    return rows


def _counts(w: md_store.WriteOutcome) -> dict[str, int]:
    return {"inserted": w.inserted, "revised": w.revised, "unchanged": w.unchanged}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_ingest(
    settings: Settings,
    req: IngestRequest | None = None,
    *,
    now: datetime | None = None,
    providers: dict[str, Any] | None = None,
) -> IngestOutcome:
    """One ingest (module docstring). `now` stands for the clock (tests, replays);
    `providers` for the FRED and Yahoo adapters built from settings. Raises IngestError (or
    DataValidationError) with nothing written; the failure is recorded in `md_ingests`."""
    from bloasis.marketdata.universe import load_universe

    req = (req or IngestRequest()).resolved(settings)
    now = now or market_now(settings)
    engine = get_engine(settings)
    target = calendar.latest_complete_session(
        now, timedelta(seconds=settings.session_settle_seconds)
    )
    out = IngestOutcome(status="up to date", target=target)
    t0 = time.perf_counter()
    with advisory_lock(
        engine, _LOCK_KEY, what="market-data ingest", timeout_s=settings.run_lock_timeout_seconds
    ) as waited:
        out.timings["lock_wait_s"] = waited
        universe = load_universe(settings.live_universe)
        members = [(m.symbol, m.yahoo) for m in universe.members]
        last = _last_dates(engine)
        if INDEX_SYMBOL not in last:
            out.seeded = _load_history(engine)
            last = _last_dates(engine)
        last_index = last[INDEX_SYMBOL].last_date if INDEX_SYMBOL in last else None
        if req.since is None and last_index is not None and last_index >= target:
            log.info("market data up to date: %s is the newest complete session", target)
            out.timings["total_s"] = time.perf_counter() - t0
            return out
        plan = _plan(settings, req, last, members, target)
        t = time.perf_counter()
        got = _fetch_all(
            plan, providers or _providers(settings, req.names), settings.provider_concurrency
        )
        out.timings["fetch_s"] = time.perf_counter() - t
        for f in plan:
            out.fetched[f.provider] = out.fetched.get(f.provider, 0) + 1
        t = time.perf_counter()
        try:
            # What is stored over the fetched spans, bars and series apart (a series that
            # stopped years ago must not make every symbol's bars since then be read).
            bar_keys = {INDEX_SYMBOL, *(s for s, _ in members)}
            series_keys = [VIX_SERIES, *FRED_UST, CREDIT_SYMBOL, SP500_SERIES]
            with engine.connect() as conn:
                stored_bars = md_store.current_bars(
                    conn, sorted(bar_keys), _lo(plan, bar_keys, target), target
                )
                stored_series = md_store.current_series(
                    conn, series_keys, _lo(plan, set(series_keys), target), target
                )
            rows = _transform(settings, got, stored_bars, stored_series, target, last_index)
        except (IngestError, DataValidationError) as exc:
            _record_failure(engine, req, target, exc)
            raise
        out.timings["check_s"] = time.perf_counter() - t
        out.warnings, out.quarantined = rows.warnings, rows.quarantined
        t = time.perf_counter()
        bars, series = rows.bars_frame(), _concat(rows.series)
        with engine.begin() as conn:
            ingest_id = md_store.begin_ingest(
                conn,
                kind="live",
                source="+".join(req.names),
                params={
                    "target": target.isoformat(),
                    "since": req.since.isoformat() if req.since else None,
                    "providers": list(req.names),
                    "universe": settings.live_universe,
                },
            )
            md_store.upsert_symbols(
                conn,
                [md_store.SymbolInfo(INDEX_SYMBOL, "index", "S&P 500", None)]
                + [
                    md_store.SymbolInfo(m.symbol, "stock", m.name, m.sector)
                    for m in universe.members
                ],
            )
            wb = md_store.write_bars(conn, bars, ingest_id=ingest_id, ingested_at=now) \
                if not bars.empty else md_store.WriteOutcome()  # fmt: skip
            ws = md_store.write_series(conn, series, ingest_id=ingest_id, ingested_at=now) \
                if not series.empty else md_store.WriteOutcome()  # fmt: skip
            index_days = (
                set(bars["session"][bars["symbol"] == INDEX_SYMBOL]) if len(bars) else set()
            )
            out.new_sessions = sorted(d for d in index_days if last_index is None or d > last_index)
            out.ingest_id, out.status = ingest_id, "ingested"
            out.bars, out.series = _counts(wb), _counts(ws)
            out.revisions = [
                f"{r.key} {r.day} {r.field}: {r.old:.6g} -> {r.new:.6g} ({r.source})"
                for r in [*wb.revisions, *ws.revisions]
            ]
            # A large revision is stored like any other (a new version), and said out loud.
            out.warnings += [
                f"large revision: {r.key} {r.day} {r.field} {r.old:.6g} -> {r.new:.6g}"
                f" ({abs(r.new / r.old - 1):.1%}, {r.source})"
                for r in [*wb.revisions, *ws.revisions]
                if np.isfinite(r.old) and np.isfinite(r.new) and r.old
                and abs(r.new / r.old - 1) > settings.splice_tolerance
            ]  # fmt: skip
            out.timings["write_s"] = time.perf_counter() - t
            out.timings["total_s"] = time.perf_counter() - t0
            md_store.finish_ingest(conn, ingest_id, status="completed", result=out.summary())
    for w in out.warnings:
        log.warning("%s", w)
    if out.quarantined:
        log.warning("left out: %s", "; ".join(out.quarantined[:10]))
    log.info(
        "ingested %d new session(s) up to %s: bars %s, series %s, %d revision(s), %d warning(s)",
        len(out.new_sessions),
        target,
        out.bars,
        out.series,
        len(out.revisions),
        len(out.warnings),
    )
    return out


def _lo(plan: list[_Fetch], keys: set[str], target: date) -> date:
    return min((f.start for f in plan if f.key in keys), default=target)


def _last_dates(engine: Engine) -> dict[str, md_store.LastDate]:
    with engine.connect() as conn:
        return {r.key: r for r in md_store.last_dates(conn)}


def _load_history(engine: Engine) -> int:
    """An empty store gets the embedded dataset as its first vintage (rows loaded)."""
    got = md_store.load_embedded_vintage(engine)
    rows = got.bars.inserted + got.series.inserted
    log.info("empty store: the embedded 1990–2022 history loaded as its first vintage (%d rows)",
             rows)  # fmt: skip
    return rows


def _record_failure(engine: Engine, req: IngestRequest, target: date, exc: BaseException) -> None:
    try:
        with engine.begin() as conn:
            iid = md_store.begin_ingest(
                conn,
                kind="live",
                source="+".join(req.names),
                params={"target": target.isoformat()},
            )
            md_store.finish_ingest(conn, iid, status="failed", error=str(exc)[:2000])
    except Exception as rec:  # the ingest's own error is what the caller must see
        log.warning("could not record the failed ingest: %s", rec)


def pipeline_due(settings: Settings) -> tuple[bool, int]:
    """(whether the daily pipeline has sessions to compute, the history days its first run
    should warm up): with live market data, the newest stored complete session is newer than
    the last profile strategy (or regime, for none); a first run warms up a year of regimes."""
    from bloasis.config import parse_universe
    from bloasis.pipeline import newest_live_session
    from bloasis.regime.model import resolve_model
    from bloasis.store import regimes
    from bloasis.store import strategies as strategy_store

    if parse_universe(settings.universe)[0] != "live":
        return False, 0
    mv = resolve_model(settings.model_version, settings.universe, settings.regime_overrides).version
    newest = newest_live_session(settings)
    if newest is None:
        return False, 0
    with get_engine(settings).connect() as conn:
        done = strategy_store.latest_strategy_as_of(conn, mv)
        first = regimes.latest_regime(conn, mv) is None
    return (done is None or done < newest), (365 if first else 0)


def format_outcome(out: IngestOutcome, *, markdown: bool = False) -> str:
    """What an ingest did, for a terminal or (markdown) a Prefect artifact."""
    new = ", ".join(d.isoformat() for d in out.new_sessions) or "none"
    lines = [
        f"{'# ' if markdown else ''}Market-data ingest: {out.status} (newest complete session "
        f"{out.target})",
        "",
        f"- new sessions: {new}",
        f"- bars: {out.bars or '-'}; series: {out.series or '-'}; requests: {out.fetched or '-'}",
        f"- history vintage loaded first: {out.seeded} rows" if out.seeded else "",
        f"- timings: {', '.join(f'{k} {v:.2f}s' for k, v in out.timings.items())}",
    ]
    for title, items in (("revisions", out.revisions), ("warnings", out.warnings),
                         ("left out", out.quarantined)):  # fmt: skip
        if items:
            lines += ["", f"{'## ' if markdown else ''}{title} ({len(items)})", ""]
            lines += [f"- {x}" for x in items[:20]]
            if len(items) > 20:
                lines.append(f"- ... and {len(items) - 20} more")
    return "\n".join(x for x in lines if x is not None)


# --- status ----------------------------------------------------------------------------------
def data_status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Per series and symbol of the store: last date, source, first seen, versions, sessions
    behind the newest complete session, and the lag from that session's close to first seen;
    plus the last ingests."""
    now = now or market_now(settings)
    target = calendar.latest_complete_session(
        now, timedelta(seconds=settings.session_settle_seconds)
    )
    with get_engine(settings).connect() as conn:
        rows = md_store.last_dates(conn)
        ingests = md_store.recent_ingests(conn, limit=5)
    out_rows = []
    for r in rows:
        entry: dict[str, Any] = {
            "key": r.key,
            "kind": r.kind,
            "last": r.last_date.isoformat(),
            "source": r.source,
            "first_seen": r.first_seen.isoformat() if r.first_seen else None,
            "versions": r.versions,
        }
        if r.key != CREDIT_SYMBOL and calendar.is_session(r.last_date):
            entry["behind"] = max(0, len(calendar.session_dates(r.last_date, target)) - 1)
            if r.first_seen is not None:
                lag = r.first_seen - calendar.session_close(r.last_date)
                entry["lag_hours"] = round(lag.total_seconds() / 3600, 1)
        out_rows.append(entry)
    return {
        "market_data": settings.universe,
        "live_universe": settings.live_universe,
        "newest_complete_session": target.isoformat(),
        "series": [e for e in out_rows if e["kind"] != "stock"],
        "stocks": [e for e in out_rows if e["kind"] == "stock"],
        "ingests": ingests,
    }


def format_data_status(report: dict[str, Any], every_stock: bool = False) -> str:
    def row(e: dict[str, Any]) -> str:
        behind = e.get("behind")
        lag = e.get("lag_hours")
        return (
            f"{e['key']:<9} last {e['last']}  source {e['source']:<9} first seen "
            f"{(e['first_seen'] or '-')[:19]:<19}  versions {e['versions']:<3}"
            + (f"  behind {behind}" if behind is not None else "")
            + (f"  lag {lag} h" if lag is not None else "")
        )

    lines = [
        f"market data {report['market_data']}; live universe {report['live_universe']}; "
        f"newest complete session {report['newest_complete_session']}"
    ]
    if not report["series"] and not report["stocks"]:
        lines.append("the store is empty: `bloasis data ingest` (or `bloasis data seed`)")
    lines += [row(e) for e in report["series"]]
    stocks = report["stocks"]
    if stocks and every_stock:
        lines += [row(e) for e in stocks]
    elif stocks:
        lasts = sorted(e["last"] for e in stocks)
        behind = [e["key"] for e in stocks if e.get("behind")]
        sources = sorted({e["source"] for e in stocks})
        lines.append(
            f"stocks    {len(stocks)} symbols, last {lasts[0]}..{lasts[-1]}, sources "
            f"{', '.join(sources)}; {len(behind)} behind"
            + (f" ({', '.join(behind[:8])}{' ...' if len(behind) > 8 else ''})" if behind else "")
            + " (--all lists them)"
        )
    for i in report["ingests"][:3]:
        lines.append(
            f"ingest    {i['kind']:<7} {i['status']:<9} started {str(i['started_at'])[:19]}"
            + (f": {str(i['error'])[:160]}" if i.get("error") else "")
        )
    return "\n".join(lines)
