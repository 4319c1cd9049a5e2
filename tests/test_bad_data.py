"""Bad market data through the pipeline: every rule gives an error naming symbol, date and rule
(or is quarantined with a warning when enabled); malformed files give a clear message; nothing
is written by a run that fails on its data."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from bloasis.marketdata import DataFormatError, DataValidationError, write_csv
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.pipeline import load_market_data_with_issues
from bloasis.store.models import OutboxRow, PipelineRun, RegimeRow
from bloasis.strategy.session import screen_universe

SYMBOLS = ["KO", "JNJ", "XOM", "AAPL", "JPM"]


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    md = EmbeddedSource().load().between("2019-01-02", "2020-12-31")
    md = dataclasses.replace(md, closes=md.closes[SYMBOLS], sectors=md.sectors[SYMBOLS])
    return write_csv(md, tmp_path_factory.mktemp("data") / "bars.csv")


def _mutate(src: Path, dst: Path, fn: object) -> Path:
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df = fn(df)  # type: ignore[operator]
    df.to_csv(dst, index=False)
    return dst


def _row(df: pd.DataFrame, symbol: str, day: str) -> pd.Index:
    return df.index[(df["symbol"] == symbol) & (df["date"] == day)]


def test_clean_file_loads(good_csv: Path) -> None:
    md, issues = load_market_data_with_issues(universe=f"file:{good_csv}")
    assert issues == [] and sorted(md.closes.columns) == sorted(SYMBOLS)
    assert md.last_date == date(2020, 12, 31)


def _set(col: str, value: str, symbol: str = "KO", day: str = "2020-03-16"):  # type: ignore[no-untyped-def]
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[_row(df, symbol, day), col] = value
        return df

    return fn


def _set_both(value: str):  # type: ignore[no-untyped-def]
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        rows = _row(df, "KO", "2020-03-16")
        df.loc[rows, "close"] = value
        df.loc[rows, "adj_close"] = value
        return df

    return fn


def _high_lt_low(df: pd.DataFrame) -> pd.DataFrame:
    rows = _row(df, "^SPX", "2020-03-16")
    df.loc[rows, ["open", "high", "low"]] = ["2400", "2300", "2500"]
    return df


def _drop_day(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["date"] != "2020-07-15"]


def _dup(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.loc[_row(df, "JNJ", "2020-06-01")]])


def _drop_session(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(_row(df, "^SPX", "2020-07-15"))


def _unsorted(df: pd.DataFrame) -> pd.DataFrame:
    i = _row(df, "^SPX", "2020-07-15")[0]
    j = _row(df, "^SPX", "2020-07-16")[0]
    df.loc[[i, j], "date"] = ["2020-07-16", "2020-07-15"]
    return df


@pytest.mark.parametrize(
    ("name", "fn", "expected"),
    [
        ("nan", _set_both("nan"), ("KO", "2020-03-16", "[nan]")),
        ("zero", _set("adj_close", "0"), ("KO", "2020-03-16", "[non_positive]")),
        ("negative", _set("close", "-3.5", "XOM"), ("XOM", "2020-03-16", "[non_positive]")),
        ("high_lt_low", _high_lt_low, ("^SPX", "2020-03-16", "[high_lt_low]")),
        ("duplicate", _dup, ("JNJ", "2020-06-01", "[duplicate_date]")),
        ("index_row_missing", _drop_session, ("KO", "2020-07-15", "[not_in_index]")),
        ("session_missing", _drop_day, ("^SPX", "2020-07-15", "[calendar_gap]")),
        ("unsorted", _unsorted, ("^SPX", "2020-07-1", "[unsorted_dates]")),
    ],
)
def test_each_rule_names_symbol_date_rule_or_quarantines(
    good_csv: Path, tmp_path: Path, name: str, fn: object, expected: tuple[str, str, str]
) -> None:
    bad = _mutate(good_csv, tmp_path / f"{name}.csv", fn)
    with pytest.raises(DataValidationError) as err:
        load_market_data_with_issues(universe=f"file:{bad}")
    msg = str(err.value)
    for part in expected:
        assert part in msg, (part, msg)
    if name in ("unsorted", "session_missing", "index_row_missing"):
        return  # structural: quarantine cannot repair the session index
    md, issues = load_market_data_with_issues(universe=f"file:{bad}", quarantine=True)
    assert any(i.symbol == expected[0] and f"[{i.rule}]" == expected[2] for i in issues), issues
    assert md.last_date == date(2020, 12, 31)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("date,symbol,close\n2020-01-02,^SPX,3257.85\nnot-a-date,^SPX,3234.85\n", "date"),
        ("day,ticker,price\n2020-01-02,^SPX,1\n", "missing"),
        ("date,symbol,close\n2020-01-02,^SPX,abc\n", "close"),
        ("", "empty"),
    ],
)
def test_malformed_files_give_a_clear_message(tmp_path: Path, content: str, expected: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises((DataFormatError, DataValidationError)) as err:
        load_market_data_with_issues(universe=f"file:{p}")
    assert str(p) in str(err.value) and expected in str(err.value).lower()


def test_too_little_history_and_empty_universe(good_csv: Path) -> None:
    md, _ = load_market_data_with_issues(universe=f"file:{good_csv}")
    closes = md.closes.copy()
    closes.loc[: pd.Timestamp("2020-12-10"), "AAPL"] = float("nan")  # listed 2020-12-11
    young = dataclasses.replace(md, closes=closes)
    with pytest.raises(DataValidationError) as err:
        screen_universe(young, date(2020, 12, 31), min_history=21, quarantine=False)
    assert "AAPL 2020-12-11 [too_little_history]" in str(err.value)
    kept, issues = screen_universe(young, date(2020, 12, 31), min_history=21, quarantine=True)
    assert "AAPL" not in kept.closes.columns and [i.symbol for i in issues] == ["AAPL"]
    empty = dataclasses.replace(md, closes=md.closes * float("nan"))
    with pytest.raises(DataValidationError, match="empty universe"):
        screen_universe(empty, date(2020, 12, 31), min_history=21, quarantine=True)


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _run(args: list[str], state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    base = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    base |= {"BLOASIS_STATE_DIR": str(state), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "run", *args],
        env=base | env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.prefect
def test_a_run_on_bad_data_writes_nothing_and_quarantine_completes(
    prefect_harness: None, clean_db: Engine, stack_state_dir: Path, good_csv: Path, tmp_path: Path
) -> None:
    bad = _mutate(good_csv, tmp_path / "bad.csv", _set("adj_close", "-1", "JPM", "2020-11-02"))
    before = [_count(clean_db, m) for m in (RegimeRow, OutboxRow, PipelineRun)]
    proc = _run(["--universe", f"file:{bad}", "--regime-only"], stack_state_dir)
    assert proc.returncode == 1, proc.stderr[-2000:]
    # Prefect logs the failed task with its traceback; the command's last word is one line.
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bloasis: market data: csv:") and "JPM 2020-11-02 [non_positive]" in last
    assert [_count(clean_db, m) for m in (RegimeRow, OutboxRow, PipelineRun)] == before
    ok = _run(
        ["--universe", f"file:{bad}", "--regime-only", "--json"],
        stack_state_dir,
        BLOASIS_QUARANTINE="true",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    # The bad price, and the hole it leaves in JPM's history, both reported.
    assert "quarantined 2 bad rows: JPM 2020-11-02 non_positive; JPM 2020-11-02 nan" in ok.stderr
    assert _count(clean_db, RegimeRow) == before[0] + 1
