"""Stock universes: which symbols live market data covers, with their names and GICS sectors.

A universe is a CSV file, header required::

    symbol,name,sector,yahoo
    AAPL,Apple Inc.,Information Technology,AAPL
    BRK-B,Berkshire Hathaway,Financials,BRK-B

``symbol``, ``name`` and ``sector`` are required columns (``name`` may be empty), ``yahoo`` (the
Yahoo Finance ticker) is optional and defaults to the symbol; other columns are ignored.
``sector`` must be one of the 11 GICS sector names exactly (`GICS_SECTORS`). Symbols must be
unique, and so must Yahoo tickers.

Specs understood by `load_universe`:

- ``sp500``: ``data/universe_sp500.csv``, today's S&P 500 members (from pytickersymbols),
- ``current20``: ``data/universe_current20.csv``, the 20 stocks of the embedded dataset,
- ``file:PATH``: a user's CSV in the format above.

Both shipped files are built by ``python -m bloasis.marketdata.build_universe``; provenance,
licence and the sector-mapping rules are in ``data/UNIVERSE.md``. They are today's members, not
a point-in-time membership history: history on them has survivorship bias.
"""

from __future__ import annotations

import csv
import difflib
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bloasis.marketdata.types import GICS_SECTORS

DATA_DIR = Path(__file__).resolve().parent / "data"
PROVENANCE_PATH = DATA_DIR / "UNIVERSE.md"

# Shipped universes: spec -> file name in DATA_DIR.
SHIPPED: dict[str, str] = {
    "sp500": "universe_sp500.csv",
    "current20": "universe_current20.csv",
}
FILE_PREFIX = "file:"

COLUMNS: tuple[str, ...] = ("symbol", "name", "sector", "yahoo")
REQUIRED_COLUMNS: tuple[str, ...] = ("symbol", "name", "sector")

# At most this many problems are listed in one `UniverseError` message (all are in `.problems`).
_MAX_LISTED_PROBLEMS = 20

# A row of the "Files" table of UNIVERSE.md: | `universe_sp500.csv` | <source> | <count> |
_SOURCE_ROW = re.compile(r"^\|\s*`(?P<file>[^`]+)`\s*\|\s*(?P<source>[^|]+?)\s*\|")


class UniverseError(ValueError):
    """A universe cannot be loaded: unknown spec, missing file, or invalid content.

    The message names the file, and the line of each problem; `problems` lists them all."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


@dataclass(frozen=True)
class Member:
    """One stock of a universe. `yahoo` is its Yahoo Finance ticker (``BRK-B``)."""

    symbol: str
    name: str
    sector: str
    yahoo: str


@dataclass(frozen=True)
class Universe:
    """A named list of members. `spec` is what was asked for (``sp500``, ``file:x.csv``);
    `source` says where the members come from (package and version, build date, or the path)."""

    spec: str
    source: str
    members: tuple[Member, ...]

    @property
    def symbols(self) -> list[str]:
        """Symbols in file order (the shipped files are sorted by symbol)."""
        return [m.symbol for m in self.members]

    @property
    def sectors(self) -> dict[str, str]:
        """symbol -> GICS sector."""
        return {m.symbol: m.sector for m in self.members}

    @property
    def by_yahoo(self) -> dict[str, Member]:
        """Yahoo ticker -> member."""
        return {m.yahoo: m for m in self.members}

    def sector_counts(self) -> dict[str, int]:
        """Members per GICS sector, all 11 sectors in `GICS_SECTORS` order (0 when absent)."""
        counts = dict.fromkeys(GICS_SECTORS, 0)
        for m in self.members:
            counts[m.sector] += 1
        return counts

    def __len__(self) -> int:
        return len(self.members)


# ------------------------------------------------------------------------------------------------
# Loading


def load_universe(spec: str) -> Universe:
    """Load a universe: ``sp500``, ``current20`` or ``file:PATH`` (see the module docstring).

    Raises `UniverseError` (a ValueError) for an unknown spec, a missing file or invalid content.
    Results are cached per spec and file modification time, so an edited file is re-read."""
    spec = spec.strip()
    path = resolve_spec(spec)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise UniverseError(f"universe {spec!r}: cannot read {path}: {exc.strerror}") from None
    return _load_cached(spec, str(path), mtime_ns)


def resolve_spec(spec: str) -> Path:
    """The CSV file a spec names (not checked for existence)."""
    if spec in SHIPPED:
        return DATA_DIR / SHIPPED[spec]
    if spec.startswith(FILE_PREFIX):
        raw = spec[len(FILE_PREFIX) :].strip()
        if not raw:
            raise UniverseError(f"universe spec {spec!r}: no path after {FILE_PREFIX!r}")
        return Path(raw).expanduser().resolve()
    valid = ", ".join([*SHIPPED, f"{FILE_PREFIX}PATH"])
    raise UniverseError(f"unknown universe spec {spec!r}: valid specs are {valid}")


@functools.lru_cache(maxsize=32)
def _load_cached(spec: str, path: str, mtime_ns: int) -> Universe:
    p = Path(path)
    members = read_universe_csv(p)
    source = (shipped_source(SHIPPED[spec]) if spec in SHIPPED else None) or str(p)
    return Universe(spec=spec, source=source, members=members)


def shipped_source(file_name: str, provenance: Path = PROVENANCE_PATH) -> str | None:
    """The provenance line of a shipped file, from the "Files" table of UNIVERSE.md, e.g.
    ``pytickersymbols 1.17.10 S&P 500, built 2026-12-03`` (None when not recorded)."""
    try:
        text = provenance.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        m = _SOURCE_ROW.match(line)
        if m and m.group("file") == file_name:
            return m.group("source")
    return None


def read_universe_csv(path: Path) -> tuple[Member, ...]:
    """Read and validate a universe CSV; raises `UniverseError` listing every problem found."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return parse_universe_rows(csv.reader(fh), str(path))
    except OSError as exc:
        raise UniverseError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UniverseError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UniverseError(f"{path}: not a valid CSV file ({exc})") from None


def parse_universe_rows(reader: Iterable[list[str]], where: str) -> tuple[Member, ...]:
    """Validate CSV rows (header first); `where` names the file in messages. With a
    `csv.reader`, line numbers are physical lines (where a row starts, when a quoted field spans
    lines); with another iterable, row numbers."""
    rows = iter(reader)
    last_line = 0  # physical line on which the previous row ended

    def next_row() -> tuple[int, list[str]] | None:
        nonlocal last_line
        row = next(rows, None)
        if row is None:
            return None
        start = last_line + 1
        last_line = int(getattr(reader, "line_num", start))
        return start, row

    header: list[str] | None = None
    header_line = 0
    while (item := next_row()) is not None:
        if any(cell.strip() for cell in item[1]):
            header_line, header = item[0], [cell.strip().lower() for cell in item[1]]
            break
    if header is None:
        raise UniverseError(
            f"{where}: empty file (expected a header line: {','.join(COLUMNS)})",
            ["empty file"],
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UniverseError(
            f"{where}: line {header_line}: missing column(s) {', '.join(missing)} "
            f"(header must contain {','.join(REQUIRED_COLUMNS)}[,yahoo]; got {','.join(header)})",
            [f"line {header_line}: missing column(s) {', '.join(missing)}"],
        )
    dup_cols = sorted({c for c in header if c and header.count(c) > 1})
    if dup_cols:
        raise UniverseError(
            f"{where}: line {header_line}: duplicate column(s) {', '.join(dup_cols)}",
            [f"line {header_line}: duplicate column(s) {', '.join(dup_cols)}"],
        )
    col = {c: header.index(c) for c in COLUMNS if c in header}

    def cell(row: list[str], name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    problems: list[str] = []
    members: list[Member] = []
    first_line: dict[str, int] = {}
    first_yahoo: dict[str, int] = {}
    while (item := next_row()) is not None:
        line, row = item
        if not any(c.strip() for c in row):
            continue  # blank line
        symbol, name, sector = cell(row, "symbol"), cell(row, "name"), cell(row, "sector")
        yahoo = cell(row, "yahoo") or symbol
        bad = False
        if not symbol:
            problems.append(f"line {line}: empty symbol")
            bad = True
        elif symbol in first_line:
            first = first_line[symbol]
            problems.append(f"line {line}: duplicate symbol {symbol!r} (first on line {first})")
            bad = True
        elif yahoo in first_yahoo:
            first = first_yahoo[yahoo]
            problems.append(
                f"line {line}: duplicate yahoo ticker {yahoo!r} (first on line {first})"
            )
            bad = True
        if sector not in GICS_SECTORS:
            problems.append(f"line {line}: {_sector_problem(symbol, sector)}")
            bad = True
        if symbol:
            first_line.setdefault(symbol, line)
            first_yahoo.setdefault(yahoo, line)
        if not bad:
            members.append(Member(symbol=symbol, name=name, sector=sector, yahoo=yahoo))

    if problems:
        listed = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        plural = "s" if len(problems) > 1 else ""
        raise UniverseError(
            f"{where}: {len(problems)} problem{plural}:\n  " + "\n  ".join(listed) + tail,
            problems,
        )
    if not members:
        raise UniverseError(
            f"{where}: empty file (a header on line {header_line} but no member rows)",
            ["no members"],
        )
    return tuple(members)


def _sector_problem(symbol: str, sector: str) -> str:
    who = f"symbol {symbol!r}: " if symbol else ""
    valid = ", ".join(GICS_SECTORS)
    if not sector:
        return f"{who}empty sector (valid GICS sectors: {valid})"
    folded = {s.casefold().replace(" ", ""): s for s in GICS_SECTORS}
    hint = folded.get(sector.casefold().replace(" ", ""))
    if hint is None:
        close = difflib.get_close_matches(sector, GICS_SECTORS, n=1, cutoff=0.6)
        hint = close[0] if close else None
    did_you_mean = f"; did you mean {hint!r}?" if hint else ""
    return (
        f"{who}sector {sector!r} is not a GICS sector{did_you_mean} (valid GICS sectors: {valid})"
    )


# ------------------------------------------------------------------------------------------------
# Display


def format_universe(u: Universe, first: int = 10) -> str:
    """Text shown by ``bloasis data universe``: spec, source, member count, members per sector
    and the first `first` members."""
    counts = u.sector_counts()
    width = max(len(s) for s in GICS_SECTORS)
    lines = [
        f"universe: {u.spec}",
        f"source:   {u.source}",
        f"members:  {len(u.members)}",
        "",
        f"{'sector':<{width}}  members",
    ]
    lines += [f"{sector:<{width}}  {n:>7}" for sector, n in counts.items()]
    lines.append(f"{'total':<{width}}  {len(u.members):>7}")
    shown = u.members[: max(first, 0)]
    if shown:
        sym_w = max(6, *(len(m.symbol) for m in shown))
        lines += ["", f"{'symbol':<{sym_w}}  {'sector':<{width}}  name"]
        lines += [f"{m.symbol:<{sym_w}}  {m.sector:<{width}}  {m.name}" for m in shown]
        rest = len(u.members) - len(shown)
        if rest > 0:
            lines.append(f"... and {rest} more")
    return "\n".join(lines)
