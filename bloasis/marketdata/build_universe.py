"""Build the shipped universe files (run by hand, once; the output is committed).

    python -m bloasis.marketdata.build_universe [--check] [--out DIR]

Writes ``data/universe_sp500.csv``, ``data/universe_current20.csv`` and ``data/UNIVERSE.md``.
``--check`` rebuilds in memory and exits 1 when a shipped file differs from the rebuild (the
build date recorded in UNIVERSE.md is kept, so an unchanged build compares equal).

Inputs (build time only, not runtime dependencies): the S&P 500 members of the installed
``pytickersymbols`` package (MIT; the ``live`` extra) and the embedded dataset
(`EmbeddedSource`) for the 20 stocks of ``current20``.

Sector mapping. pytickersymbols gives each stock a list of ``industries`` at mixed levels
(e.g. ``["Conglomerate", "Industrial Conglomerates", "Industrials"]``), not a GICS sector. The
sector of a member is decided by the first rule that applies, in this order:

1. ``override``: the per-symbol table `SECTOR_OVERRIDES` (each entry with its reason), for what
   the rules below get wrong or cannot decide.
2. ``gics-name``: the industries contain exactly one of the 11 GICS sector names verbatim.
3. ``tie``: they contain several; `TIE_RULES` resolves known pairs (e.g. a utility tagged both
   "Energy" and "Utilities" is a utility).
4. ``keyword``: they contain none; each industry label votes for the sector of the first
   `KEYWORD_RULES` keyword it contains, and a strict majority of the votes wins.

A member no rule decides stops the build with an error asking for an override. The Yahoo
ticker is the member's USD listing without an exchange suffix that equals the index symbol
(``.`` written ``-``: ``BRK.B`` -> ``BRK-B``), else `YAHOO_OVERRIDES`; the system symbol is that
Yahoo ticker.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from bloasis.marketdata.types import GICS_SECTORS
from bloasis.marketdata.universe import (
    COLUMNS,
    DATA_DIR,
    SHIPPED,
    UniverseError,
    parse_universe_rows,
)

PACKAGE = "pytickersymbols"
INDEX_NAME = "S&P 500"
SP500_FILE = SHIPPED["sp500"]
CURRENT20_FILE = SHIPPED["current20"]
PROVENANCE_FILE = "UNIVERSE.md"

# --- Sector rules --------------------------------------------------------------------------------

# Per-symbol sector overrides: symbol (index form) -> (GICS sector, reason). Checked against the
# S&P 500 constituents list (Wikipedia via github.com/datasets/s-and-p-500-companies, ODC-PDDL),
# 2026-08-08 (commit 56509dd).
SECTOR_OVERRIDES: dict[str, tuple[str, str]] = {
    "APP": (
        "Communication Services",
        "tagged 'Information Technology' (Application Software, its classification when it "
        "joined the index in 2025); Communication Services / Advertising in the 2026-08-08 "
        "constituents list",
    ),
    "DD": (
        "Industrials",
        "tagged 'Materials' (Specialty Chemicals, its classification until 2026); Industrials / "
        "Industrial Conglomerates in the 2026-08-08 constituents list",
    ),
    "GRMN": (
        "Consumer Discretionary",
        "tagged both 'Consumer Discretionary' and 'Industrials' (aviation segment); GICS: "
        "Consumer Electronics",
    ),
    "STE": (
        "Health Care",
        "tagged 'Health Care' and, wrongly, 'Utilities' / 'Electric Utilities'; GICS: Health "
        "Care Equipment (sterilization products)",
    ),
}

# Several GICS names in the industries: the set of names -> (sector, reason).
TIE_RULES: dict[frozenset[str], tuple[str, str]] = {
    frozenset({"Energy", "Utilities"}): (
        "Utilities",
        "power and gas utilities are also tagged with the generic 'Energy'",
    ),
    frozenset({"Financials", "Real Estate"}): (
        "Real Estate",
        "REITs keep the pre-2016 GICS tag 'Financials' (Real Estate became a sector in 2016)",
    ),
    frozenset({"Financials", "Industrials"}): (
        "Financials",
        "financial data providers (ratings, indexes) are also tagged 'Professional & "
        "Commercial Services'; GICS: Financial Exchanges & Data",
    ),
    frozenset({"Energy", "Industrials"}): (
        "Industrials",
        "makers of power equipment are also tagged 'Energy'; GICS: Heavy Electrical Equipment",
    ),
}

# Fallback when the industries name no GICS sector: (keyword, sector), first match wins for each
# industry label (case-insensitive substring), so specific keywords come before generic ones.
KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    # Consumer Staples retailers before the generic "retail" and the "drug" of Health Care
    ("drug retail", "Consumer Staples"),
    ("food & drug retailing", "Consumer Staples"),
    ("food retail", "Consumer Staples"),
    ("discount", "Consumer Staples"),
    ("consumer goods", "Consumer Staples"),
    ("consumer products", "Consumer Staples"),
    # Real Estate before Financials ("real estate investment trust")
    ("reit", "Real Estate"),
    ("retis", "Real Estate"),
    ("real estate", "Real Estate"),
    ("apartments", "Real Estate"),
    ("self storage", "Real Estate"),
    # Utilities before Energy ("energy and power generation")
    ("utilit", "Utilities"),
    ("electricity", "Utilities"),
    ("power generation", "Utilities"),
    ("ipps", "Utilities"),
    ("water and wastewater", "Utilities"),
    ("electric power", "Utilities"),
    # Energy
    ("oil", "Energy"),
    ("petroleum", "Energy"),
    ("natural gas", "Energy"),
    ("fossil fuel", "Energy"),
    ("hydrocarbon", "Energy"),
    # Health Care
    ("health", "Health Care"),
    ("pharma", "Health Care"),
    ("biotech", "Health Care"),
    ("biopharma", "Health Care"),
    ("medical", "Health Care"),
    ("dental", "Health Care"),
    ("orthodont", "Health Care"),
    ("life sciences", "Health Care"),
    ("contract research", "Health Care"),
    ("scientific instrument", "Health Care"),
    # Financials
    ("bank", "Financials"),
    ("insurance", "Financials"),
    ("financ", "Financials"),
    ("investment", "Financials"),
    ("asset management", "Financials"),
    ("brokerage", "Financials"),
    ("exchange", "Financials"),
    ("payment", "Financials"),
    ("consumer lending", "Financials"),
    ("crypto", "Financials"),
    # Communication Services before IT ("internet", "telecommunications equipment" excepted)
    ("telecommunications equipment", "Information Technology"),
    ("telecoms equipment", "Information Technology"),
    ("telecom", "Communication Services"),
    ("wireless", "Communication Services"),
    ("media", "Communication Services"),
    ("broadcasting", "Communication Services"),
    ("publishing", "Communication Services"),
    ("advertising", "Communication Services"),
    ("entertainment", "Communication Services"),
    ("video game", "Communication Services"),
    ("online dating", "Communication Services"),
    ("internet", "Communication Services"),
    # Information Technology ("travel technology" and "heavy equipment" excepted)
    ("travel", "Consumer Discretionary"),
    ("heavy equipment", "Industrials"),
    ("semiconductor", "Information Technology"),
    ("photovoltaic", "Information Technology"),
    ("information security", "Information Technology"),
    ("software", "Information Technology"),
    ("information technology", "Information Technology"),
    ("it services", "Information Technology"),
    ("computer", "Information Technology"),
    ("electronic", "Information Technology"),
    ("networking", "Information Technology"),
    ("cloud", "Information Technology"),
    ("cybersecurity", "Information Technology"),
    ("saas", "Information Technology"),
    ("technology", "Information Technology"),
    # Materials
    ("chemical", "Materials"),
    ("mining", "Materials"),
    ("metal", "Materials"),
    ("steel", "Materials"),
    ("gold", "Materials"),
    ("packaging", "Materials"),
    ("containers", "Materials"),
    ("paper", "Materials"),
    ("construction materials", "Materials"),
    ("building materials", "Materials"),
    ("fertilizer", "Materials"),
    ("basic materials", "Materials"),
    # Consumer Staples
    ("food", "Consumer Staples"),
    ("beverage", "Consumer Staples"),
    ("drink", "Consumer Staples"),
    ("brewer", "Consumer Staples"),
    ("tobacco", "Consumer Staples"),
    ("household", "Consumer Staples"),
    ("personal", "Consumer Staples"),
    ("cosmetic", "Consumer Staples"),
    ("confectionery", "Consumer Staples"),
    ("consumer non-cyclical", "Consumer Staples"),
    # Consumer Discretionary
    ("retail", "Consumer Discretionary"),
    ("restaurant", "Consumer Discretionary"),
    ("hotel", "Consumer Discretionary"),
    ("hospitality", "Consumer Discretionary"),
    ("lodging", "Consumer Discretionary"),
    ("cruise", "Consumer Discretionary"),
    ("tourism", "Consumer Discretionary"),
    ("leisure", "Consumer Discretionary"),
    ("automo", "Consumer Discretionary"),
    ("auto ", "Consumer Discretionary"),
    ("apparel", "Consumer Discretionary"),
    ("clothing", "Consumer Discretionary"),
    ("fashion", "Consumer Discretionary"),
    ("home construction", "Consumer Discretionary"),
    ("home improvement", "Consumer Discretionary"),
    ("e-commerce", "Consumer Discretionary"),
    ("cyclical", "Consumer Discretionary"),
    ("toys", "Consumer Discretionary"),
    # Industrials
    ("aerospace", "Industrials"),
    ("defense", "Industrials"),
    ("defence", "Industrials"),
    ("machinery", "Industrials"),
    ("industrial", "Industrials"),
    ("transport", "Industrials"),
    ("freight", "Industrials"),
    ("logistics", "Industrials"),
    ("courier", "Industrials"),
    ("airline", "Industrials"),
    ("rail", "Industrials"),
    ("construction", "Industrials"),
    ("engineering", "Industrials"),
    ("electrical", "Industrials"),
    ("waste", "Industrials"),
    ("hvac", "Industrials"),
    ("professional services", "Industrials"),
    ("human resource", "Industrials"),
    ("conglomerate", "Industrials"),
    ("manufacturing", "Industrials"),
)

# The hand cross-check behind SECTOR_OVERRIDES (shown in UNIVERSE.md for that version only).
CROSS_CHECKED_VERSION = "1.17.10"
CROSS_CHECK_NOTE = """\
Written by hand (2026-12-03, for pytickersymbols 1.17.10) after comparing the rule output
with the S&P 500 constituents list of github.com/datasets/s-and-p-500-companies (from
Wikipedia, ODC-PDDL; 2026-08-08, commit 56509dd): with these overrides the two agreed on
all 491 members they shared. 12 members of the 1.17.10 snapshot had left the index by then
(BK, CAG, CPB, CTRA, EA, EPAM, HOLX, LW, MOH, MTCH, PAYC, POOL; BK trades as BNY there) and
11 newer members are missing here (CASY, COHR, ECHO, FDXF, FERG, FLEX, HONA, LITE, MRVL,
VEEV, VRT). That list is a cross-check only, not an input of the build."""

# --- Yahoo tickers -------------------------------------------------------------------------------

# Index symbol -> (Yahoo ticker, reason), where the package's USD listings lack the current one.
YAHOO_OVERRIDES: dict[str, tuple[str, str]] = {
    "BF.B": ("BF-B", "the package lists 'BF.B' (Yahoo writes share classes with '-')"),
    "DOC": ("DOC", "the package lists the old tickers PEAK and HCP (renamed DOC in 2024)"),
    "EG": ("EG", "the package lists the old ticker RE (Everest Re, renamed EG in 2023)"),
}

# Names for embedded symbols pytickersymbols does not know.
CURRENT20_NAMES: dict[str, str] = {
    "RRC": "Range Resources",
}

# A Yahoo ticker with an exchange suffix (MMM.F, 0U96.L): a dot followed by letters at the end.
_EXCHANGE_SUFFIX = re.compile(r"\.[A-Z]{1,4}$")


class BuildError(RuntimeError):
    """The universe cannot be built (a member without sector or Yahoo ticker...)."""


@dataclass(frozen=True)
class Row:
    symbol: str
    name: str
    sector: str
    yahoo: str


@dataclass
class Sp500Build:
    rows: list[Row]
    rule_counts: Counter[str] = field(default_factory=Counter)
    # rule -> symbols decided by it (for the tie and keyword rules, shown in UNIVERSE.md)
    decided_by: dict[str, list[str]] = field(default_factory=dict)
    # symbol -> what the rules alone would have given (for the overrides)
    rules_would_give: dict[str, str] = field(default_factory=dict)
    unused_overrides: list[str] = field(default_factory=list)
    # keyword fallback measured on all members: (agrees with final sector, decides, members)
    keyword_agreement: tuple[int, int, int] = (0, 0, 0)
    package_version: str = ""


# ------------------------------------------------------------------------------------------------
# Mapping


def keyword_sector(industries: Iterable[str]) -> str | None:
    """Sector by keyword votes (rule 4): each label votes for the sector of its first matching
    keyword; a strict majority of the votes wins, None when no vote or no majority."""
    votes: Counter[str] = Counter()
    for label in industries:
        text = f"{label.casefold()} "
        for keyword, sector in KEYWORD_RULES:
            if keyword in text:
                votes[sector] += 1
                break
    if not votes:
        return None
    (best, n), *rest = votes.most_common()
    if rest and rest[0][1] == n:
        return None
    return best


def rule_sector(industries: Sequence[str]) -> tuple[str | None, str]:
    """Sector from the industries by rules 2-4 (no override): (sector or None, rule name)."""
    names = frozenset(i.strip() for i in industries if i.strip() in GICS_SECTORS)
    if len(names) == 1:
        return next(iter(names)), "gics-name"
    if names:
        tie = TIE_RULES.get(names)
        return (tie[0] if tie else None), "tie"
    return keyword_sector(industries), "keyword"


def classify(symbol: str, industries: Sequence[str]) -> tuple[str, str]:
    """(GICS sector, rule) of one member; raises `BuildError` when no rule decides."""
    if symbol in SECTOR_OVERRIDES:
        return SECTOR_OVERRIDES[symbol][0], "override"
    sector, rule = rule_sector(industries)
    if sector is None:
        raise BuildError(
            f"{symbol}: no sector from industries {list(industries)} (rule {rule!r} cannot "
            "decide); add it to SECTOR_OVERRIDES"
        )
    return sector, rule


def yahoo_symbol(stock: Mapping[str, Any]) -> str:
    """The member's USD Yahoo ticker without exchange suffix, equal to the index symbol with
    '.' written '-' (else `YAHOO_OVERRIDES`); raises `BuildError` when neither gives one."""
    symbol = str(stock["symbol"])
    if symbol in YAHOO_OVERRIDES:
        return YAHOO_OVERRIDES[symbol][0]
    wanted = symbol.replace(".", "-")
    candidates = [
        str(s.get("yahoo", ""))
        for s in stock.get("symbols", [])
        if s.get("currency") == "USD" and not _EXCHANGE_SUFFIX.search(str(s.get("yahoo", "")))
    ]
    if wanted in candidates:
        return wanted
    raise BuildError(
        f"{symbol}: no USD Yahoo ticker {wanted!r} among {candidates}; add it to YAHOO_OVERRIDES"
    )


def _pts() -> Any:
    try:
        from pytickersymbols import PyTickerSymbols
    except ImportError as exc:
        raise BuildError("pytickersymbols is not installed (pip install 'bloasis[live]')") from exc
    return PyTickerSymbols()


def package_version() -> str:
    return metadata.version(PACKAGE)


def build_sp500(stocks: Iterable[Mapping[str, Any]], version: str = "") -> Sp500Build:
    """Rows of universe_sp500.csv (sorted by symbol) and the statistics shown in UNIVERSE.md."""
    rows: list[Row] = []
    build = Sp500Build(rows=rows, package_version=version)
    errors: list[str] = []
    seen: set[str] = set()
    agree = decided = total = 0
    for stock in stocks:
        index_symbol = str(stock["symbol"]).strip()
        industries = [str(i) for i in stock.get("industries") or []]
        try:
            yahoo = yahoo_symbol(stock)
            sector, rule = classify(index_symbol, industries)
        except BuildError as exc:
            errors.append(str(exc))
            continue
        if yahoo in seen:
            errors.append(f"{index_symbol}: duplicate symbol {yahoo!r}")
            continue
        seen.add(yahoo)
        build.rule_counts[rule] += 1
        if rule in ("tie", "keyword"):
            build.decided_by.setdefault(rule, []).append(yahoo)
        if rule == "override":
            would = rule_sector(industries)[0]
            build.rules_would_give[index_symbol] = would or "(undecided)"
        # How good is the keyword fallback? Apply it to the labels that are not GICS names.
        kw = keyword_sector([i for i in industries if i.strip() not in GICS_SECTORS])
        total += 1
        decided += kw is not None
        agree += kw == sector
        name = " ".join(str(stock.get("name") or "").split()) or yahoo
        rows.append(Row(symbol=yahoo, name=name, sector=sector, yahoo=yahoo))
    if errors:
        raise BuildError("cannot build the S&P 500 universe:\n  " + "\n  ".join(errors))
    rows.sort(key=lambda r: r.symbol)
    build.keyword_agreement = (agree, decided, total)
    index_symbols = {str(s) for s in build.rules_would_give}
    build.unused_overrides = sorted(set(SECTOR_OVERRIDES) - index_symbols)
    for sym in sorted(index_symbols):
        if build.rules_would_give[sym] == SECTOR_OVERRIDES[sym][0]:
            build.unused_overrides.append(sym)
    return build


def build_current20(
    embedded_sectors: Mapping[str, str], sp500: Sequence[Row], pts: Any | None
) -> list[Row]:
    """Rows of universe_current20.csv: the embedded symbols with the embedded dataset's sectors;
    names from the S&P 500 build, else any pytickersymbols index, else `CURRENT20_NAMES`."""
    sp_names = {r.symbol: r.name for r in sp500}
    rows = []
    for symbol, sector in sorted(embedded_sectors.items()):
        name = sp_names.get(symbol)
        if name is None and pts is not None:
            name = pts.get_stock_name_by_yahoo_symbol(symbol)
        if name is None:
            name = CURRENT20_NAMES.get(symbol)
        if name is None:
            raise BuildError(f"{symbol}: no name; add it to CURRENT20_NAMES")
        rows.append(Row(symbol=symbol, name=" ".join(name.split()), sector=sector, yahoo=symbol))
    return rows


def embedded_sectors() -> dict[str, str]:
    from bloasis.marketdata.sources import EmbeddedSource

    sectors = EmbeddedSource().load().sectors
    return {str(k): str(v) for k, v in sectors.items()}


# ------------------------------------------------------------------------------------------------
# Rendering


def render_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.symbol, r.name, r.sector, r.yahoo])
    return buf.getvalue()


def sp500_source(version: str, built: str) -> str:
    return f"{PACKAGE} {version} {INDEX_NAME}, built {built}"


def current20_source(version: str, built: str) -> str:
    return f"embedded dataset (market.npz) sectors, names from {PACKAGE} {version}, built {built}"


def _licence_text() -> str:
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return "(licence file not found)"
    for f in dist.files or []:
        if f.name.upper().startswith("LICENSE"):
            return Path(str(dist.locate_file(f))).read_text(encoding="utf-8").strip()
    return "(licence file not found)"


def render_provenance(
    sp: Sp500Build, cur: Sequence[Row], built: str, licence: str | None = None
) -> str:
    sp_counts = Counter(r.sector for r in sp.rows)
    cur_counts = Counter(r.sector for r in cur)
    sp_by_symbol = {r.symbol: r for r in sp.rows}
    out: list[str] = []
    add = out.append
    add("# Universe files: provenance and licence")
    add("")
    add("Generated by `python -m bloasis.marketdata.build_universe` (do not edit by hand;")
    add("`--check` verifies the shipped files against a rebuild). Read by")
    add("`bloasis.marketdata.universe.load_universe`.")
    add("")
    add("## Files")
    add("")
    add("| file | source | members |")
    add("| --- | --- | --- |")
    add(f"| `{SP500_FILE}` | {sp500_source(sp.package_version, built)} | {len(sp.rows)} |")
    add(f"| `{CURRENT20_FILE}` | {current20_source(sp.package_version, built)} | {len(cur)} |")
    add("")
    add("Columns: `symbol,name,sector,yahoo`, UTF-8, sorted by symbol. `symbol` is the Yahoo")
    add("ticker (`BRK-B`, not `BRK.B`), so `symbol == yahoo` in both files; `sector` is one of the")
    add("11 GICS sector names.")
    add("")
    add("## What these files are not")
    add("")
    add("They are **not a point-in-time membership list**. `universe_sp500.csv` holds the S&P 500")
    add(f"members recorded in {PACKAGE} {sp.package_version} (today's members, as of that")
    add("release, which lags the index: see the cross-check below), with today's GICS")
    add("sectors. Price history loaded for these symbols has")
    add("**survivorship bias**: companies that left the index (acquired, bankrupt, demoted) are")
    add("missing, and a member is present in years before it joined. Back-tests over past years")
    add("on this universe overstate returns. Sectors are current too: a stock reclassified by")
    add("GICS carries its new sector over its whole history.")
    add("")
    add("`universe_current20.csv` is the 20 stocks of the embedded dataset (`market.npz`, see")
    add("`PROVENANCE.md`) with that dataset's sectors (classification as of December 2022); it has")
    add("the same bias (20 large survivors chosen in hindsight).")
    add("")
    add("## Members per sector")
    add("")
    add("| sector | sp500 | current20 |")
    add("| --- | ---: | ---: |")
    for s in GICS_SECTORS:
        add(f"| {s} | {sp_counts[s]} | {cur_counts[s]} |")
    add(f"| total | {len(sp.rows)} | {len(cur)} |")
    add("")
    add("## Sector mapping (S&P 500)")
    add("")
    add(f"{PACKAGE} gives each stock a list of `industries` at mixed levels (e.g. `Conglomerate,")
    add("Industrial Conglomerates, Industrials`), not a GICS sector. The first rule that applies")
    add("decides (code: `bloasis/marketdata/build_universe.py`):")
    add("")
    add("1. `override`: the per-symbol table below.")
    add("2. `gics-name`: the industries contain exactly one of the 11 GICS sector names verbatim.")
    add("3. `tie`: they contain several; the pair table below resolves it.")
    add("4. `keyword`: they contain none; each industry label votes for the sector of its first")
    add(f"   matching keyword (`KEYWORD_RULES`, {len(KEYWORD_RULES)} keywords, specific before")
    add("   generic, case-insensitive substring); a strict majority wins.")
    add("")
    add("A member no rule decides stops the build (it needs an override).")
    add("")
    add("Members decided by each rule:")
    add("")
    add("| rule | members |")
    add("| --- | ---: |")
    for rule in ("override", "gics-name", "tie", "keyword"):
        add(f"| {rule} | {sp.rule_counts[rule]} |")
    add("")
    agree, decided, total = sp.keyword_agreement
    add("How reliable the keyword fallback is, measured on this snapshot: applied to each")
    add(f"member's labels that are not GICS names, it decides {decided} of the {total} members and")
    add(f"agrees with the final sector for {agree} of them. Members it decides are listed here")
    add("and warned about by the builder: review them (or add overrides) before shipping.")
    add("")
    for rule in ("tie", "keyword"):
        syms = sp.decided_by.get(rule, [])
        if syms:
            add(f"Decided by `{rule}`: {', '.join(sorted(syms))}.")
            add("")
    add("### Tie rules")
    add("")
    add("| GICS names in the industries | sector | why |")
    add("| --- | --- | --- |")
    for names, (sector, why) in TIE_RULES.items():
        add(f"| {' + '.join(sorted(names))} | {sector} | {why} |")
    add("")
    add("### Sector overrides")
    add("")
    if sp.package_version == CROSS_CHECKED_VERSION:
        out.extend(CROSS_CHECK_NOTE.splitlines())
    else:
        add(f"Written for {PACKAGE} {CROSS_CHECKED_VERSION}; not cross-checked for")
        add(f"{sp.package_version}: compare this build with a current constituents list.")
    add("")
    add("| symbol | sector | rules alone | why |")
    add("| --- | --- | --- | --- |")
    for sym, (sector, why) in sorted(SECTOR_OVERRIDES.items()):
        would = sp.rules_would_give.get(sym, "(not a member)")
        add(f"| {sym} | {sector} | {would} | {why} |")
    add("")
    add("### Yahoo ticker overrides")
    add("")
    add("| index symbol | yahoo | why |")
    add("| --- | --- | --- |")
    for sym, (yahoo, why) in sorted(YAHOO_OVERRIDES.items()):
        add(f"| {sym} | {yahoo} | {why} |")
    add("")
    add("## The 20 embedded stocks")
    add("")
    add("Sectors from the embedded dataset; names from the S&P 500 build, else")
    add(f"`CURRENT20_NAMES`. `sp500` is the sector in `{SP500_FILE}` (blank: not a member today).")
    add("")
    add("| symbol | name | sector | sp500 |")
    add("| --- | --- | --- | --- |")
    for r in cur:
        sp_row = sp_by_symbol.get(r.symbol)
        sp_sector = sp_row.sector if sp_row else ""
        mark = "" if sp_row is None or sp_sector == r.sector else " (differs)"
        add(f"| {r.symbol} | {r.name} | {r.sector} | {sp_sector}{mark} |")
    add("")
    add("## Licence")
    add("")
    add(f"Source: the `{PACKAGE}` package {sp.package_version} (PyPI), data file")
    add("`pytickersymbols/indices_data.py`, MIT licence (module header: Copyright 2019 Slash")
    add("Gordon). Only symbols, names and the derived sectors are kept. Licence text, as its")
    add("terms require:")
    add("")
    add("```")
    add(licence if licence is not None else _licence_text())
    add("```")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# Build / check


_BUILT_RE = re.compile(r", built (\d{4}-\d{2}-\d{2}) \|")
_VERSION_RE = re.compile(rf"\| {PACKAGE} (\S+) {re.escape(INDEX_NAME)}, built ")


def recorded_build(provenance_text: str) -> tuple[str | None, str | None]:
    """(package version, build date) recorded in a UNIVERSE.md text (None when absent)."""
    v = _VERSION_RE.search(provenance_text)
    d = _BUILT_RE.search(provenance_text)
    return (v.group(1) if v else None), (d.group(1) if d else None)


def build_files(out_dir: Path, built: str | None = None) -> dict[str, str]:
    """Build the three files' text. `built`: the build date to record (None: keep the date in
    ``out_dir/UNIVERSE.md`` when both CSVs are unchanged, else today)."""
    pts = _pts()
    version = package_version()
    sp = build_sp500(pts.get_stocks_by_index(INDEX_NAME), version)
    cur = build_current20(embedded_sectors(), sp.rows, pts)
    files = {SP500_FILE: render_csv(sp.rows), CURRENT20_FILE: render_csv(cur)}
    for fname, text in files.items():  # the loader must accept what we ship
        parse_universe_rows(csv.reader(io.StringIO(text)), fname)
    if built is None:
        built = date.today().isoformat()
        old = _read(out_dir / PROVENANCE_FILE)
        old_version, old_date = recorded_build(old or "")
        unchanged = all(_read(out_dir / f) == t for f, t in files.items())
        if unchanged and old_date and old_version == version:
            built = old_date
    files[PROVENANCE_FILE] = render_provenance(sp, cur, built)
    for sym in sp.unused_overrides:
        print(f"warning: sector override for {sym} is unused or redundant", file=sys.stderr)
    for sym in sp.decided_by.get("keyword", []):
        print(f"warning: {sym}: sector decided by keywords only, review it", file=sys.stderr)
    return files


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def check(out_dir: Path) -> list[str]:
    """Names of the shipped files that differ from a rebuild (empty: all equal)."""
    old_version, old_date = recorded_build(_read(out_dir / PROVENANCE_FILE) or "")
    files = build_files(out_dir, built=old_date)
    differ = []
    for fname, text in files.items():
        shipped = _read(out_dir / fname)
        if shipped != text:
            differ.append(fname)
            diff = difflib.unified_diff(
                (shipped or "").splitlines(), text.splitlines(), "shipped", "rebuild", lineterm=""
            )
            print(f"--- {fname} differs:", file=sys.stderr)
            for line in list(diff)[:40]:
                print(line, file=sys.stderr)
    if differ and old_version and old_version != package_version():
        print(
            f"note: UNIVERSE.md records {PACKAGE} {old_version}, installed {package_version()}",
            file=sys.stderr,
        )
    return differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=str(DATA_DIR), help="output directory (default: package data)")
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if the files in --out differ from a rebuild"
    )
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    try:
        if args.check:
            differ = check(out_dir)
            if differ:
                print(f"universe files out of date: {', '.join(differ)}", file=sys.stderr)
                return 1
            print(f"universe files up to date ({', '.join(sorted(SHIPPED.values()))})")
            return 0
        files = build_files(out_dir)
    except (BuildError, UniverseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (out_dir / fname).write_text(text, encoding="utf-8")
        print(f"wrote {out_dir / fname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
