"""Universe files and their loader (`bloasis.marketdata.universe`), and the builder's rules
(`bloasis.marketdata.build_universe`). Pure logic, no services."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

from bloasis.marketdata import build_universe as bu
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.marketdata.types import GICS_SECTORS
from bloasis.marketdata.universe import (
    PROVENANCE_PATH,
    Member,
    Universe,
    UniverseError,
    format_universe,
    load_universe,
)

WELL_KNOWN: dict[str, str] = {
    "AAPL": "Information Technology",
    "MSFT": "Information Technology",
    "NVDA": "Information Technology",
    "GOOGL": "Communication Services",
    "GOOG": "Communication Services",
    "META": "Communication Services",
    "AMZN": "Consumer Discretionary",
    "TSLA": "Consumer Discretionary",
    "JPM": "Financials",
    "V": "Financials",  # GICS 2023: payment processors moved from IT to Financials
    "MA": "Financials",
    "BRK-B": "Financials",
    "XOM": "Energy",
    "JNJ": "Health Care",
    "LLY": "Health Care",
    "PG": "Consumer Staples",
    "KO": "Consumer Staples",
    "WMT": "Consumer Staples",
    "NEE": "Utilities",
    "DUK": "Utilities",  # tie rule: tagged Energy + Utilities
    "PLD": "Real Estate",
    "EQIX": "Real Estate",  # tie rule: tagged Financials + Real Estate
    "LIN": "Materials",
    "CAT": "Industrials",
    "ADP": "Industrials",  # GICS 2023: payroll processors moved from IT to Industrials
    "MCO": "Financials",  # tie rule: tagged Financials + Industrials
    "GEV": "Industrials",  # tie rule: tagged Energy + Industrials
    "STE": "Health Care",  # override
    "GRMN": "Consumer Discretionary",  # override
}


@pytest.fixture(scope="module")
def sp500() -> Universe:
    return load_universe("sp500")


@pytest.fixture(scope="module")
def current20() -> Universe:
    return load_universe("current20")


@pytest.fixture(scope="module")
def embedded_sectors() -> dict[str, str]:
    return {str(k): str(v) for k, v in EmbeddedSource().load().sectors.items()}


# ------------------------------------------------------------------------------------------------
# Shipped files


def _check_shape(u: Universe) -> None:
    assert u.symbols == sorted(u.symbols)
    assert len(set(u.symbols)) == len(u.symbols)
    assert all(m.sector in GICS_SECTORS for m in u.members)
    assert all(m.symbol == m.yahoo for m in u.members)
    assert all(m.name and m.name == m.name.strip() for m in u.members)
    assert sum(u.sector_counts().values()) == len(u.members)


def test_sp500_loads(sp500: Universe) -> None:
    counts = sp500.sector_counts()
    print(f"\nsp500: {len(sp500.members)} members; {counts}")
    assert 490 <= len(sp500.members) <= 510
    _check_shape(sp500)
    assert list(counts) == list(GICS_SECTORS)
    assert all(n >= 15 for n in counts.values()), counts  # every sector is represented
    assert sp500.source.startswith("pytickersymbols ")
    assert "S&P 500, built " in sp500.source
    assert sp500.by_yahoo["BRK-B"].symbol == "BRK-B"
    assert "BRK.B" not in sp500.sectors


@pytest.mark.parametrize(("symbol", "sector"), sorted(WELL_KNOWN.items()))
def test_sp500_well_known_sectors(sp500: Universe, symbol: str, sector: str) -> None:
    assert sp500.sectors[symbol] == sector


def test_current20_matches_embedded(current20: Universe, embedded_sectors: dict[str, str]) -> None:
    _check_shape(current20)
    assert len(current20.members) == 20
    assert current20.sectors == embedded_sectors
    assert current20.source.startswith("embedded dataset")
    counts = current20.sector_counts()
    assert counts["Materials"] == counts["Real Estate"] == 0  # zero sectors are listed too


def test_embedded_sectors_agree_with_sp500(
    sp500: Universe, embedded_sectors: dict[str, str]
) -> None:
    """The embedded dataset's sectors (December 2022) and today's S&P 500 file agree on every
    embedded symbol that is still a member; RRC (Range Resources) is not a member today."""
    in_sp = {s: sp500.sectors[s] for s in embedded_sectors if s in sp500.sectors}
    missing = sorted(set(embedded_sectors) - set(in_sp))
    differ = {s: (embedded_sectors[s], in_sp[s]) for s in in_sp if embedded_sectors[s] != in_sp[s]}
    print(f"\nembedded symbols not in sp500 today: {missing}; sector disagreements: {differ}")
    assert missing == ["RRC"]
    assert differ == {}


def test_load_is_cached_per_mtime(tmp_path: Path) -> None:
    f = tmp_path / "u.csv"
    f.write_text("symbol,name,sector\nAAPL,Apple,Information Technology\n")
    a = load_universe(f"file:{f}")
    assert load_universe(f"file:{f}") is a
    f.write_text("symbol,name,sector\nXOM,Exxon,Energy\n")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    b = load_universe(f"file:{f}")
    assert b is not a and b.symbols == ["XOM"]
    assert load_universe("sp500") is load_universe(" sp500 ")


# ------------------------------------------------------------------------------------------------
# file: specs


def _load_text(tmp_path: Path, text: str, name: str = "u.csv") -> Universe:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return load_universe(f"file:{f}")


def _error(tmp_path: Path, text: str) -> UniverseError:
    with pytest.raises(UniverseError) as info:
        _load_text(tmp_path, text)
    assert "u.csv" in str(info.value)  # the message names the file
    return info.value


def test_file_spec_ok(tmp_path: Path) -> None:
    u = _load_text(
        tmp_path,
        "\ufeffSymbol, Name ,Sector,yahoo,extra\n"
        "\n"
        "BRK-B,Berkshire Hathaway,Financials,BRK-B,x\n"
        " XOM ,,Energy,,\n"
        'BF-B,"Brown-Forman, Inc.",Consumer Staples\n',
    )
    assert u.members == (
        Member("BRK-B", "Berkshire Hathaway", "Financials", "BRK-B"),
        Member("XOM", "", "Energy", "XOM"),  # yahoo defaults to the symbol
        Member("BF-B", "Brown-Forman, Inc.", "Consumer Staples", "BF-B"),
    )
    assert u.source == str((tmp_path / "u.csv").resolve())
    assert u.spec.startswith("file:")
    assert set(u.by_yahoo) == {"BRK-B", "XOM", "BF-B"}


def test_file_missing_columns(tmp_path: Path) -> None:
    err = _error(tmp_path, "symbol,sector\nAAPL,Information Technology\n")
    assert "line 1: missing column(s) name" in str(err)


def test_file_empty(tmp_path: Path) -> None:
    assert "empty file" in str(_error(tmp_path, ""))
    assert "empty file" in str(_error(tmp_path, "\n\n"))
    err = _error(tmp_path, "symbol,name,sector\n")
    assert "empty file" in str(err) and "no member rows" in str(err)


def test_file_empty_symbol(tmp_path: Path) -> None:
    err = _error(tmp_path, "symbol,name,sector\nAAPL,Apple,Information Technology\n,X,Energy\n")
    assert err.problems == ["line 3: empty symbol"]


def test_file_duplicate_symbol(tmp_path: Path) -> None:
    err = _error(
        tmp_path,
        "symbol,name,sector\nAAPL,Apple,Information Technology\n\nAAPL,Apple 2,Energy\n",
    )
    assert err.problems == ["line 4: duplicate symbol 'AAPL' (first on line 2)"]


def test_file_duplicate_yahoo(tmp_path: Path) -> None:
    err = _error(tmp_path, "symbol,name,sector,yahoo\nA,A,Energy,X\nB,B,Energy,X\n")
    assert err.problems == ["line 3: duplicate yahoo ticker 'X' (first on line 2)"]


def test_file_bad_sector(tmp_path: Path) -> None:
    err = _error(
        tmp_path,
        "symbol,name,sector\nJNJ,J&J,Healthcare\nAAPL,Apple,Technology\nXOM,Exxon,\n",
    )
    assert len(err.problems) == 3
    first, second, third = err.problems
    assert first.startswith("line 2: symbol 'JNJ': sector 'Healthcare' is not a GICS sector")
    assert "did you mean 'Health Care'?" in first
    assert second.startswith("line 3: symbol 'AAPL': sector 'Technology' is not a GICS sector")
    assert third.startswith("line 4: symbol 'XOM': empty sector")
    for sector in GICS_SECTORS:  # the message says which sectors are valid
        assert sector in first
    assert "3 problems" in str(err)


def test_file_line_numbers_follow_multiline_fields(tmp_path: Path) -> None:
    err = _error(tmp_path, 'symbol,name,sector\nA,"two\nlines",Nope\nB,b,Nope\n')
    assert [p[:8] for p in err.problems] == ["line 2: ", "line 4: "]


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match=r"unknown universe spec 'sp400'.*sp500, current20"):
        load_universe("sp400")
    with pytest.raises(UniverseError, match="no path"):
        load_universe("file:")
    with pytest.raises(UniverseError, match=r"cannot read .*nope\.csv"):
        load_universe(f"file:{tmp_path / 'nope.csv'}")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"symbol,name,sector\nX,Caf\xe9,Energy\n")
    with pytest.raises(UniverseError, match=r"latin1\.csv: not UTF-8"):
        load_universe(f"file:{bad}")


# ------------------------------------------------------------------------------------------------
# Display


def test_format_universe(sp500: Universe, current20: Universe) -> None:
    text = format_universe(sp500)
    print("\n" + text)
    n = len(sp500.members)
    assert "universe: sp500" in text
    assert f"source:   {sp500.source}" in text
    assert f"members:  {n}" in text
    for sector, count in sp500.sector_counts().items():
        assert any(
            line.startswith(sector) and line.split()[-1] == str(count) for line in text.splitlines()
        ), sector
    assert f"... and {n - 10} more" in text
    assert sp500.members[0].name in text
    small = format_universe(current20, first=30)
    assert "more" not in small and "Range Resources" in small
    assert "Materials" in small  # zero counts shown


# ------------------------------------------------------------------------------------------------
# Builder rules (no pytickersymbols needed)


def test_classify_rules() -> None:
    assert bu.classify("X", ["Conglomerate", "Industrials"]) == ("Industrials", "gics-name")
    assert bu.classify("X", ["Energy", "Utilities"]) == ("Utilities", "tie")
    assert bu.classify("X", ["Financials", "Real Estate", "REIT"]) == ("Real Estate", "tie")
    assert bu.classify("X", ["Semiconductors", "Software"]) == ("Information Technology", "keyword")
    assert bu.classify("X", ["Banking", "Real estate investment trust", "Apartments"]) == (
        "Real Estate",
        "keyword",
    )
    assert bu.classify("STE", ["Utilities", "Health Care"]) == ("Health Care", "override")
    with pytest.raises(bu.BuildError, match="add it to SECTOR_OVERRIDES"):
        bu.classify("X", ["Health Care", "Materials"])  # a tie without rule
    with pytest.raises(bu.BuildError, match="SECTOR_OVERRIDES"):
        bu.classify("X", ["Banking", "Software"])  # keyword votes tie
    with pytest.raises(bu.BuildError):
        bu.classify("X", [])


def test_override_tables_are_valid() -> None:
    assert all(s in GICS_SECTORS for s, _ in bu.SECTOR_OVERRIDES.values())
    assert all(s in GICS_SECTORS for s, _ in bu.TIE_RULES.values())
    assert all(s in GICS_SECTORS for _, s in bu.KEYWORD_RULES)
    assert all(all(n in GICS_SECTORS for n in names) for names in bu.TIE_RULES)
    keywords = [k for k, _ in bu.KEYWORD_RULES]
    assert len(keywords) == len(set(keywords))


def test_yahoo_symbol() -> None:
    def stock(symbol: str, *listings: tuple[str, str]) -> dict[str, object]:
        return {"symbol": symbol, "symbols": [{"yahoo": y, "currency": c} for y, c in listings]}

    assert bu.yahoo_symbol(stock("MMM", ("MMM.F", "EUR"), ("MMM", "USD"))) == "MMM"
    assert bu.yahoo_symbol(stock("BRK.B", ("BRYN.F", "EUR"), ("BRK-B", "USD"))) == "BRK-B"
    assert bu.yahoo_symbol(stock("GOOG", ("GOOGL", "USD"), ("GOOG", "USD"))) == "GOOG"
    assert bu.yahoo_symbol(stock("BF.B", ("BF.B", "USD"))) == "BF-B"  # override
    with pytest.raises(bu.BuildError, match="YAHOO_OVERRIDES"):
        bu.yahoo_symbol(stock("ABC", ("ABC.F", "EUR"), ("XYZ", "USD")))


def test_build_sp500_synthetic() -> None:
    stocks: list[dict[str, object]] = [
        {"symbol": "ZZ", "name": "Zed  Corp", "industries": ["Utilities"], "symbols": []},
        {"symbol": "AA", "name": "Aa", "industries": ["Energy"], "symbols": []},
    ]
    for s in stocks:
        s["symbols"] = [{"yahoo": s["symbol"], "currency": "USD"}]
    build = bu.build_sp500(stocks, "0.0")
    assert [(r.symbol, r.name, r.sector) for r in build.rows] == [
        ("AA", "Aa", "Energy"),
        ("ZZ", "Zed Corp", "Utilities"),
    ]
    assert build.rule_counts["gics-name"] == 2
    with pytest.raises(bu.BuildError, match="duplicate symbol 'AA'"):
        bu.build_sp500([*stocks, stocks[1]], "0.0")


def test_recorded_build_matches_loader(sp500: Universe) -> None:
    version, built = bu.recorded_build(PROVENANCE_PATH.read_text(encoding="utf-8"))
    assert version and built
    assert sp500.source == bu.sp500_source(version, built)


# ------------------------------------------------------------------------------------------------
# The shipped files are what the builder produces


def test_builder_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    # The live extra pins the release the shipped file was built from (pyproject.toml).
    recorded, _ = bu.recorded_build(PROVENANCE_PATH.read_text(encoding="utf-8"))
    assert metadata.version("pytickersymbols") == recorded
    rc = bu.main(["--check"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "warning" not in out.err  # no unused override, no keyword-only decision
