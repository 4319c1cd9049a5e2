"""The point-in-time market-data store: every value, the day it describes, its source, when it
was first seen, and every version of it (tables ``md_ingests``, ``md_symbols``, ``md_bars``,
``md_series``; models in `bloasis.store.models`).

Versions. A value is keyed by (symbol, session) in ``md_bars`` and (series, obs_date) in
``md_series``. Writing a key with no current version inserts version 1; writing values equal to
the current version's (within ``rel_tol`` on every field, NaN equal to NaN; the source is
provenance and is not compared) changes nothing; writing different values is a *revision*: a new
version is inserted and the one it replaces is kept, marked superseded. Nothing is ever updated
in place except that mark, and nothing is deleted.

Visibility (what a read "as of D" may see). ``cutoff(D)`` is `bloasis.calendar.knowledge_cutoff`:
the open of the first session after D; for a date that is not a session (a monthly series dated
by the 1st of the month it measures, a yield published on an exchange holiday) it is the cut-off
of the first session on or after it. On write:

- a first version gets ``available_at = NULL`` when ``cutoff(date) <= ingested_at`` (history
  loaded after the fact, or a late/catch-up ingest: it is visible by its own date, and by the
  publication conventions the source applies to it, e.g. the monthly credit-spread lag), else
  ``available_at = ingested_at`` (seen live, before its cut-off: visible from then on);
- a revision always gets ``available_at = ingested_at``, and the version it replaces gets
  ``superseded_at = ingested_at``.

A read as of D at knowledge time K (default ``K = min(now, cutoff(D))``) sees the rows with::

    date <= D
    AND (available_at IS NULL OR available_at <= K)
    AND (superseded_at IS NULL OR superseded_at > K)

Each version is visible on the half-open interval [available_at or -inf, superseded_at or +inf)
and a revision's interval starts where its predecessor's ends, so at most one version per key is
visible at any K: the latest whose availability is <= K, and an earlier K never sees a later
revision. Once D's cut-off has passed, K is fixed, so what a read as of D returns is
reproducible whatever is revised afterwards (revisions are ingested, hence visible, after K).
Writers are serialised (a transaction-scoped advisory lock) and ingest times of one key must
not go backwards (a revision older than the version it replaces is refused).

Reads for `bloasis.marketdata.database.DatabaseSource` are one binary ``COPY (SELECT ...) TO
STDOUT`` per table with that predicate, parsed with a numpy record dtype (`read_visible_bars`,
`read_visible_series`; the bars come packed as fixed-width records, one bytea per symbol, so the
client handles one COPY message per symbol instead of one per bar). Writes COPY the batch into a
temporary table and compare and insert in SQL (`write_bars`, `write_series`). All functions take
a `Connection` and run inside the caller's transaction, except `load_embedded_vintage` (its own
transaction).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from bloasis import calendar
from bloasis.store.models import MarketIngestRow, MarketSymbolRow

_INGESTS = cast(Table, MarketIngestRow.__table__)
_SYMBOLS = cast(Table, MarketSymbolRow.__table__)

FIELDS: Final = ("open", "high", "low", "close", "adj_close", "volume")
INGEST_KINDS: Final = ("vintage", "live")
INGEST_STATUSES: Final = ("running", "completed", "failed")
SYMBOL_KINDS: Final = ("index", "stock")
# The series `DatabaseSource` reads (others may be stored, e.g. cross-checks, and are ignored).
VIX_SERIES, UST10Y_SERIES, UST2Y_SERIES, CREDIT_SERIES = "VIX", "UST10Y", "UST2Y", "BAA_AAA"
READ_SERIES: Final = (VIX_SERIES, UST10Y_SERIES, UST2Y_SERIES, CREDIT_SERIES)
EMBEDDED_SOURCE: Final = "embedded"
MAX_REVISIONS_LISTED: Final = 1000
# Serialises writers of md_bars/md_series (two ingests comparing against the same current
# version would both insert version 2); transaction-scoped, so it ends with the caller's commit.
WRITE_LOCK_ID: Final = 0x0B10A5D1
_PG_EPOCH_DAYS: Final = 10957  # 2000-01-01 (PostgreSQL's date epoch) in days since 1970-01-01
_COPY_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER: Final = _COPY_SIGNATURE + b"\x00" * 8  # flags 0, no header extension
_COPY_TRAILER: Final = b"\xff\xff"
_COPY_CHUNK: Final = 1 << 24
# Batches larger than this get ANALYZE (planner statistics for the joins that follow).
_ANALYZE_ROWS: Final = 10_000


# ------------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True)
class SymbolInfo:
    symbol: str
    kind: str  # index | stock
    name: str | None = None
    sector: str | None = None


@dataclass(frozen=True)
class Revision:
    """A stored value that changed: the first differing field of the row (``value`` for a
    series), its old and new values and the new value's source."""

    key: str  # symbol or series name
    day: date
    field: str
    old: float
    new: float
    source: str


@dataclass(frozen=True)
class WriteOutcome:
    """Rows of a write: first versions inserted, revisions, rows equal to the current version.
    `revisions` lists at most `MAX_REVISIONS_LISTED` (oldest days first); `revised` counts all."""

    inserted: int = 0
    revised: int = 0
    unchanged: int = 0
    revisions: list[Revision] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-able counts and the first revisions (for an ingest's `result`)."""
        return {
            "inserted": self.inserted,
            "revised": self.revised,
            "unchanged": self.unchanged,
            "revisions": [
                {
                    **asdict(r),
                    "day": r.day.isoformat(),
                    # JSON has no NaN: an unknown value is null.
                    "old": r.old if np.isfinite(r.old) else None,
                    "new": r.new if np.isfinite(r.new) else None,
                }
                for r in self.revisions[:20]
            ],
        }


@dataclass(frozen=True)
class LastDate:
    """The newest stored date of a symbol or series (for ``bloasis data status``).

    first_seen: ``ingested_at`` of the version current for that date.
    versions: the number of versions of the key's most revised value (1 = never revised)."""

    key: str
    kind: str  # index | stock | series
    last_date: date
    source: str
    first_seen: datetime
    versions: int


@dataclass(frozen=True)
class VintageOutcome:
    """What `load_embedded_vintage` stored. `ingest_id` is None when there was nothing to do
    (the store already holds the embedded data through `through`)."""

    ingest_id: int | None
    through: date
    bars: WriteOutcome
    series: WriteOutcome
    seconds: float

    @property
    def inserted(self) -> int:
        return self.bars.inserted + self.series.inserted


# ------------------------------------------------------------------------------------------------
# Ingest log


def begin_ingest(conn: Connection, *, kind: str, source: str, params: dict[str, Any]) -> int:
    """A ``running`` ingest row; its id goes on every version the ingest writes."""
    if kind not in INGEST_KINDS:
        raise ValueError(f"ingest kind must be one of {INGEST_KINDS}, got {kind!r}")
    stmt = (
        insert(_INGESTS)
        .values(kind=kind, source=source, status="running", params=params, started_at=func.now())
        .returning(_INGESTS.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def finish_ingest(
    conn: Connection,
    ingest_id: int,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    if status not in INGEST_STATUSES[1:]:
        raise ValueError(f"a finished ingest is completed or failed, got {status!r}")
    conn.execute(
        update(_INGESTS)
        .where(_INGESTS.c.id == ingest_id)
        .values(status=status, result=result or {}, error=error, finished_at=func.now())
    )


def recent_ingests(conn: Connection, *, limit: int = 10) -> list[dict[str, Any]]:
    """The last `limit` ingests, newest first, JSON-able (times as ISO strings): id, kind,
    source, status, started_at, finished_at, params, result, error."""
    q = (
        select(
            _INGESTS.c.id,
            _INGESTS.c.kind,
            _INGESTS.c.source,
            _INGESTS.c.status,
            _INGESTS.c.started_at,
            _INGESTS.c.finished_at,
            _INGESTS.c.params,
            _INGESTS.c.result,
            _INGESTS.c.error,
        )
        .order_by(_INGESTS.c.id.desc())
        .limit(limit)
    )
    out = []
    for r in conn.execute(q).mappings():
        row = dict(r)
        for k in ("started_at", "finished_at"):
            row[k] = row[k].isoformat() if row[k] is not None else None
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------
# Symbols


def upsert_symbols(conn: Connection, rows: Sequence[SymbolInfo]) -> dict[str, int]:
    """Insert or update symbols (name and sector only when given); returns symbol -> id."""
    if not rows:
        return {}
    bad = sorted({r.kind for r in rows} - set(SYMBOL_KINDS))
    if bad:
        raise ValueError(f"symbol kind must be one of {SYMBOL_KINDS}, got {bad}")
    latest = {r.symbol: r for r in rows}  # the last row of a symbol wins
    stmt = insert(_SYMBOLS).values(
        [
            {"symbol": r.symbol, "kind": r.kind, "name": r.name, "sector": r.sector}
            for r in latest.values()
        ]
    )
    ex = stmt.excluded
    name = func.coalesce(ex.name, _SYMBOLS.c.name)
    sector = func.coalesce(ex.sector, _SYMBOLS.c.sector)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_SYMBOLS.c.symbol],
        set_={"kind": ex.kind, "name": name, "sector": sector, "updated_at": func.now()},
        # No write (and no updated_at bump) when nothing changes.
        where=(
            _SYMBOLS.c.kind.is_distinct_from(ex.kind)
            | _SYMBOLS.c.name.is_distinct_from(name)
            | _SYMBOLS.c.sector.is_distinct_from(sector)
        ),
    )
    conn.execute(stmt)
    return _symbol_ids(conn, list(latest))


def _symbol_ids(conn: Connection, symbols: Sequence[str]) -> dict[str, int]:
    q = select(_SYMBOLS.c.symbol, _SYMBOLS.c.id).where(_SYMBOLS.c.symbol.in_(list(symbols)))
    return {s: int(i) for s, i in conn.execute(q)}


def _ensure_symbols(conn: Connection, symbols: Sequence[str]) -> dict[str, int]:
    """Ids of `symbols`, creating unknown ones (kind ``index`` for ``^`` names, else ``stock``;
    no name or sector: `upsert_symbols` adds those)."""
    ids = _symbol_ids(conn, symbols)
    missing = [s for s in symbols if s not in ids]
    if missing:
        conn.execute(
            insert(_SYMBOLS)
            .values(
                [{"symbol": s, "kind": "index" if s.startswith("^") else "stock"} for s in missing]
            )
            .on_conflict_do_nothing(index_elements=[_SYMBOLS.c.symbol])
        )
        ids.update(_symbol_ids(conn, missing))
    return ids


# ------------------------------------------------------------------------------------------------
# Knowledge cut-offs


@functools.lru_cache(maxsize=4096)
def cutoff_of(day: date) -> datetime:
    """`knowledge_cutoff` of `day`, or of the first session on or after it when it is not one."""
    s = day if calendar.is_session(day) else calendar.next_session(day)
    return calendar.knowledge_cutoff(s)


def _seen_live(days: np.ndarray, ingested_at: datetime) -> np.ndarray:
    """Per day (datetime64[D]): True when its cut-off is after `ingested_at` (a first version
    gets ``available_at = ingested_at``), False when it has passed (``available_at`` NULL).

    Only days within a few weeks of `ingested_at` need the calendar: a cut-off comes within
    ~30 days of its date (two sessions, no NYSE closure lasts two weeks), and a day after
    `ingested_at`'s UTC date has its cut-off (a session open after it) later still."""
    t_day = np.datetime64(ingested_at.astimezone(UTC).date(), "D")
    live = days > t_day
    near = (days >= t_day - 40) & ~live
    if near.any():
        uniq, inv = np.unique(days[near], return_inverse=True)
        flags = np.array([cutoff_of(d.item()) > ingested_at for d in uniq], dtype=bool)
        live[near] = flags[inv]
    return live


def _check_time(ingested_at: datetime) -> None:
    if ingested_at.tzinfo is None:
        raise ValueError(f"ingested_at must be timezone-aware, got {ingested_at!r}")


# ------------------------------------------------------------------------------------------------
# Binary COPY helpers

_BARS_IN_DTYPE: Final = np.dtype(
    [("nf", ">i2"), ("l_id", ">i4"), ("symbol_id", ">i4"), ("l_day", ">i4"), ("day", ">i4")]
    + [x for f in FIELDS for x in ((f"l_{f}", ">i4"), (f, ">f8"))]
    + [("l_src", ">i4"), ("src", ">i2"), ("l_live", ">i4"), ("live", "u1")]
)
_SERIES_IN_DTYPE: Final = np.dtype(
    [
        ("nf", ">i2"),
        ("l_k", ">i4"),
        ("k", ">i2"),
        ("l_day", ">i4"),
        ("day", ">i4"),
        ("l_value", ">i4"),
        ("value", ">f8"),
        ("l_src", ">i4"),
        ("src", ">i2"),
        ("l_live", ">i4"),
        ("live", "u1"),
    ]
)
_BARS_PACKED_DTYPE: Final = np.dtype(
    [("symbol_id", ">i4"), ("day", ">i4")] + [(f, ">f8") for f in FIELDS]
)
_SERIES_OUT_DTYPE: Final = np.dtype(
    [
        ("nf", ">i2"),
        ("l_k", ">i4"),
        ("k", ">i2"),
        ("l_day", ">i4"),
        ("day", ">i4"),
        ("l_value", ">i4"),
        ("value", ">f8"),
    ]
)


def _records(dtype: np.dtype, n: int) -> np.ndarray:
    """`n` binary-COPY tuples of `dtype`, the field count and lengths filled in."""
    rec = np.zeros(n, dtype=dtype)
    names = [x for x in dtype.names or () if x != "nf"]
    rec["nf"] = len(names) // 2
    for length_name, value_name in zip(names[::2], names[1::2], strict=True):
        rec[length_name] = dtype[value_name].itemsize
    return rec


def _raw(conn: Connection) -> Any:
    raw = conn.connection.driver_connection
    assert raw is not None
    return raw


def _copy_body(buf: bytes | bytearray) -> int:
    """Offset of the first row of a binary COPY stream (after the signature and extension)."""
    if not buf.startswith(_COPY_SIGNATURE):
        raise ValueError("not a PostgreSQL binary COPY stream")
    return 19 + int.from_bytes(buf[15:19], "big")


def _unpack_bytea_rows(buf: bytes | bytearray, dtype: np.dtype) -> np.ndarray:
    """A binary COPY of one non-null bytea column whose values are packed records of `dtype`:
    the records of every row, concatenated. Python walks the rows (one per symbol), not the
    records."""
    view = memoryview(buf)
    pos = _copy_body(buf)
    parts: list[memoryview] = []
    while True:
        nf = int.from_bytes(view[pos : pos + 2], "big", signed=True)
        if nf == -1:
            break
        if nf != 1:
            raise ValueError(f"binary COPY row has {nf} columns, expected 1")
        size = int.from_bytes(view[pos + 2 : pos + 6], "big", signed=True)
        if size < 0 or size % dtype.itemsize:
            raise ValueError("binary COPY row is not a whole number of packed records")
        parts.append(view[pos + 6 : pos + 6 + size])
        pos += 6 + size
    return np.frombuffer(b"".join(parts), dtype=dtype)


def _parse_copy(buf: bytes | bytearray, dtype: np.dtype) -> np.ndarray:
    """A binary COPY result of fixed-width, non-null rows as records of `dtype`."""
    start = _copy_body(buf)
    body = len(buf) - start - len(_COPY_TRAILER)
    if body % dtype.itemsize:
        raise ValueError("binary COPY rows are not fixed-width (a NULL or a type changed?)")
    rec = np.frombuffer(buf, dtype=dtype, offset=start, count=body // dtype.itemsize)
    if rec.size and not (rec["nf"] == _records(dtype, 1)["nf"][0]).all():
        raise ValueError("binary COPY rows do not have the expected columns")
    return rec


# ------------------------------------------------------------------------------------------------
# Writes


def _days_of(values: Any) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(values).values.astype("datetime64[D]"))


def _codes(values: Any) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(pd.Series(values), sort=False)
    if (codes < 0).any():
        raise ValueError("a key or source is missing (None/NaN)")
    return codes, [str(u) for u in uniques]


# Field equality in the comparisons below, for each field f (NaN = NaN and inf = inf are true in
# PostgreSQL; NaN sorts above Infinity, so `abs(x) < 'Infinity'` means finite):
#     i.f = c.f OR (abs(i.f) < 'Infinity' AND abs(c.f) < 'Infinity'
#                   AND abs(i.f - c.f) <= tol * greatest(abs(i.f), abs(c.f)))
_BARS_TEMP = (
    "DROP TABLE IF EXISTS pg_temp.md_bars_in, pg_temp.md_bars_diff; "
    "CREATE TEMP TABLE md_bars_in (symbol_id int4, session date, open float8, high float8, "
    "low float8, close float8, adj_close float8, volume float8, src int2, live bool) "
    "ON COMMIT DROP"
)
_BARS_COPY_IN = "COPY md_bars_in FROM STDIN (FORMAT binary)"
# Rows whose current version differs (see `_equal_expr`), with the first differing field.
_BARS_DIFF = """
CREATE TEMP TABLE md_bars_diff ON COMMIT DROP AS
SELECT d.*,
       (ARRAY[d.c_open, d.c_high, d.c_low, d.c_close, d.c_adj_close, d.c_volume])[d.field_no]
           AS old_value,
       (ARRAY[d.open, d.high, d.low, d.close, d.adj_close, d.volume])[d.field_no] AS new_value
FROM (
  SELECT i.*, c.version AS cur_version, c.ingested_at AS cur_ingested_at,
         c.open AS c_open, c.high AS c_high, c.low AS c_low, c.close AS c_close,
         c.adj_close AS c_adj_close, c.volume AS c_volume,
         CASE
           WHEN NOT (i.open = c.open OR (abs(i.open) < 'Infinity' AND abs(c.open) < 'Infinity'
                AND abs(i.open - c.open) <= %(tol)s * greatest(abs(i.open), abs(c.open))))
             THEN 1
           WHEN NOT (i.high = c.high OR (abs(i.high) < 'Infinity' AND abs(c.high) < 'Infinity'
                AND abs(i.high - c.high) <= %(tol)s * greatest(abs(i.high), abs(c.high))))
             THEN 2
           WHEN NOT (i.low = c.low OR (abs(i.low) < 'Infinity' AND abs(c.low) < 'Infinity'
                AND abs(i.low - c.low) <= %(tol)s * greatest(abs(i.low), abs(c.low))))
             THEN 3
           WHEN NOT (i.close = c.close OR (abs(i.close) < 'Infinity'
                AND abs(c.close) < 'Infinity'
                AND abs(i.close - c.close) <= %(tol)s * greatest(abs(i.close), abs(c.close))))
             THEN 4
           WHEN NOT (i.adj_close = c.adj_close OR (abs(i.adj_close) < 'Infinity'
                AND abs(c.adj_close) < 'Infinity'
                AND abs(i.adj_close - c.adj_close)
                    <= %(tol)s * greatest(abs(i.adj_close), abs(c.adj_close))))
             THEN 5
           WHEN NOT (i.volume = c.volume OR (abs(i.volume) < 'Infinity'
                AND abs(c.volume) < 'Infinity'
                AND abs(i.volume - c.volume) <= %(tol)s * greatest(abs(i.volume), abs(c.volume))))
             THEN 6
           ELSE 0
         END AS field_no
  FROM md_bars_in i
  JOIN md_bars c
    ON c.symbol_id = i.symbol_id AND c.session = i.session AND c.superseded_at IS NULL
) d
WHERE d.field_no > 0
"""
_BARS_STATS = "SELECT count(*), count(*) FILTER (WHERE cur_ingested_at > %(t)s) FROM md_bars_diff"
_BARS_SUPERSEDE = """
UPDATE md_bars c SET superseded_at = %(t)s
FROM md_bars_diff d
WHERE c.symbol_id = d.symbol_id AND c.session = d.session AND c.superseded_at IS NULL
"""
_BARS_INSERT_REVISIONS = """
INSERT INTO md_bars (symbol_id, session, version, open, high, low, close, adj_close, volume,
                     source, ingest_id, ingested_at, available_at, superseded_at)
SELECT d.symbol_id, d.session, d.cur_version + 1, d.open, d.high, d.low, d.close, d.adj_close,
       d.volume, (%(sources)s::varchar[])[d.src], %(ingest)s, %(t)s, %(t)s, NULL
FROM md_bars_diff d
"""
_BARS_INSERT_NEW = """
INSERT INTO md_bars (symbol_id, session, version, open, high, low, close, adj_close, volume,
                     source, ingest_id, ingested_at, available_at, superseded_at)
SELECT i.symbol_id, i.session, 1, i.open, i.high, i.low, i.close, i.adj_close, i.volume,
       (%(sources)s::varchar[])[i.src], %(ingest)s, %(t)s,
       CASE WHEN i.live THEN %(t)s::timestamptz END, NULL
FROM md_bars_in i
WHERE NOT EXISTS (
  SELECT 1 FROM md_bars c
  WHERE c.symbol_id = i.symbol_id AND c.session = i.session AND c.superseded_at IS NULL
)
"""
_BARS_REVISIONS = """
SELECT s.symbol, d.session, d.field_no, d.old_value, d.new_value, (%(sources)s::varchar[])[d.src]
FROM md_bars_diff d JOIN md_symbols s ON s.id = d.symbol_id
ORDER BY d.session, s.symbol
LIMIT %(limit)s
"""

_SERIES_TEMP = (
    "DROP TABLE IF EXISTS pg_temp.md_series_in, pg_temp.md_series_diff; "
    "CREATE TEMP TABLE md_series_in (k int2, obs_date date, value float8, src int2, live bool, "
    "series varchar(32)) ON COMMIT DROP"
)
_SERIES_COPY_IN = "COPY md_series_in (k, obs_date, value, src, live) FROM STDIN (FORMAT binary)"
_SERIES_NAMES = "UPDATE md_series_in SET series = (%(names)s::varchar[])[k]"
_SERIES_DIFF = """
CREATE TEMP TABLE md_series_diff ON COMMIT DROP AS
SELECT i.*, c.version AS cur_version, c.ingested_at AS cur_ingested_at, c.value AS old_value
FROM md_series_in i
JOIN md_series c
  ON c.series = i.series AND c.obs_date = i.obs_date AND c.superseded_at IS NULL
WHERE NOT (i.value = c.value OR (abs(i.value) < 'Infinity' AND abs(c.value) < 'Infinity'
           AND abs(i.value - c.value) <= %(tol)s * greatest(abs(i.value), abs(c.value))))
"""
_SERIES_STATS = (
    "SELECT count(*), count(*) FILTER (WHERE cur_ingested_at > %(t)s) FROM md_series_diff"
)
_SERIES_SUPERSEDE = """
UPDATE md_series c SET superseded_at = %(t)s
FROM md_series_diff d
WHERE c.series = d.series AND c.obs_date = d.obs_date AND c.superseded_at IS NULL
"""
_SERIES_INSERT_REVISIONS = """
INSERT INTO md_series (series, obs_date, version, value, source, ingest_id, ingested_at,
                       available_at, superseded_at)
SELECT d.series, d.obs_date, d.cur_version + 1, d.value, (%(sources)s::varchar[])[d.src],
       %(ingest)s, %(t)s, %(t)s, NULL
FROM md_series_diff d
"""
_SERIES_INSERT_NEW = """
INSERT INTO md_series (series, obs_date, version, value, source, ingest_id, ingested_at,
                       available_at, superseded_at)
SELECT i.series, i.obs_date, 1, i.value, (%(sources)s::varchar[])[i.src], %(ingest)s, %(t)s,
       CASE WHEN i.live THEN %(t)s::timestamptz END, NULL
FROM md_series_in i
WHERE NOT EXISTS (
  SELECT 1 FROM md_series c
  WHERE c.series = i.series AND c.obs_date = i.obs_date AND c.superseded_at IS NULL
)
"""
_SERIES_REVISIONS = """
SELECT d.series, d.obs_date, 1, d.old_value, d.value, (%(sources)s::varchar[])[d.src]
FROM md_series_diff d
ORDER BY d.obs_date, d.series
LIMIT %(limit)s
"""


def _copy_in(cur: Any, statement: str, rec: np.ndarray) -> None:
    payload = memoryview(_COPY_HEADER + rec.tobytes() + _COPY_TRAILER)
    with cur.copy(statement) as cp:
        for i in range(0, len(payload), _COPY_CHUNK):
            cp.write(payload[i : i + _COPY_CHUNK])


def _revisions(rows: list[Any], fields: Sequence[str]) -> list[Revision]:
    return [
        Revision(str(k), d, fields[int(f) - 1], float(old), float(new), str(src))
        for k, d, f, old, new, src in rows
    ]


def _require_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


@dataclass(frozen=True)
class _VersionSQL:
    """The statements that turn a staged batch (a temp table) into versions of one table."""

    diff: str
    stats: str
    supersede: str
    insert_revisions: str
    revisions: str
    insert_new: str
    fields: tuple[str, ...]


_BARS_SQL: Final = _VersionSQL(
    _BARS_DIFF, _BARS_STATS, _BARS_SUPERSEDE, _BARS_INSERT_REVISIONS, _BARS_REVISIONS,
    _BARS_INSERT_NEW, tuple(FIELDS),
)  # fmt: skip
_SERIES_SQL: Final = _VersionSQL(
    _SERIES_DIFF, _SERIES_STATS, _SERIES_SUPERSEDE, _SERIES_INSERT_REVISIONS,
    _SERIES_REVISIONS, _SERIES_INSERT_NEW, ("value",),
)  # fmt: skip


def _apply_versions(
    cur: Any, sql: _VersionSQL, p: dict[str, Any], what: str, n: int
) -> tuple[int, int, list[Revision]]:
    """From the staged batch: revisions (the current version superseded, a new one inserted),
    then first versions; (inserted, revised, the first revisions listed)."""
    cur.execute(sql.diff, p)
    revised, older = cur.execute(sql.stats, p).fetchone()
    if older:
        raise ValueError(
            f"{what}: {older} revision(s) ingested at {p['t'].isoformat()}, "
            "before the version they would replace (ingest times must not go backwards)"
        )
    listed: list[Revision] = []
    if revised:
        cur.execute(sql.supersede, p)
        cur.execute(sql.insert_revisions, p)
        rows = cur.execute(sql.revisions, {**p, "limit": MAX_REVISIONS_LISTED}).fetchall()
        listed = _revisions(rows, sql.fields)
    cur.execute(sql.insert_new, p)
    return int(cur.rowcount), int(revised), listed


def _stage(
    conn: Connection,
    df: pd.DataFrame,
    key: tuple[str, str],
    cols: tuple[str, ...],
    ingested_at: datetime,
    what: str,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list[str]] | None:
    """Checks and codes shared by the writers: (key codes, keys, days, source codes, sources),
    None for an empty batch; takes the writers' transaction lock."""
    _check_time(ingested_at)
    _require_columns(df, (*key, *cols), f"write_{what}")
    if len(df) == 0:
        return None
    key_codes, keys = _codes(df[key[0]].to_numpy())
    days = _days_of(df[key[1]])
    if pd.DataFrame({"s": key_codes, "d": days}).duplicated().any():
        raise ValueError(
            f"write_{what}: a ({key[0]}, {key[1]}) appears more than once in the batch"
        )
    src_codes, sources = _codes(df["source"].to_numpy())
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_ID})
    return key_codes, keys, days, src_codes, sources


def write_bars(
    conn: Connection,
    bars: pd.DataFrame,
    *,
    ingest_id: int,
    ingested_at: datetime,
    rel_tol: float = 1e-6,
) -> WriteOutcome:
    """Store daily bars (columns symbol, session, open, high, low, close, adj_close, volume,
    source; NaN = unknown): a first version for new (symbol, session) keys, nothing for values
    equal to the current version, a revision for different ones (module docstring). Unknown
    symbols are created (`upsert_symbols` sets their kind, name and sector)."""
    n = len(bars)
    staged = _stage(conn, bars, ("symbol", "session"), (*FIELDS, "source"), ingested_at, "bars")
    if staged is None:
        return WriteOutcome()
    sym_codes, symbols, days, src_codes, sources = staged
    ids = _ensure_symbols(conn, symbols)
    rec = _records(_BARS_IN_DTYPE, n)
    rec["symbol_id"] = np.array([ids[s] for s in symbols], dtype=np.int32)[sym_codes]
    rec["day"] = days.astype(np.int64) - _PG_EPOCH_DAYS
    for f in FIELDS:
        rec[f] = bars[f].to_numpy(dtype=np.float64)
    rec["src"] = src_codes + 1  # PostgreSQL arrays are 1-based
    rec["live"] = _seen_live(days, ingested_at)
    p = {"t": ingested_at, "tol": rel_tol, "sources": sources, "ingest": ingest_id}
    with _raw(conn).cursor() as cur:
        cur.execute(_BARS_TEMP)
        _copy_in(cur, _BARS_COPY_IN, rec)
        if n > _ANALYZE_ROWS:
            cur.execute("ANALYZE md_bars_in")
        inserted, revised, listed = _apply_versions(cur, _BARS_SQL, p, "write_bars", n)
        if inserted > 100_000:
            # A vintage-sized load: fresh statistics for the reads and comparisons that follow.
            cur.execute("ANALYZE md_bars")
    return WriteOutcome(inserted, revised, n - inserted - revised, listed)


def write_series(
    conn: Connection,
    rows: pd.DataFrame,
    *,
    ingest_id: int,
    ingested_at: datetime,
    rel_tol: float = 1e-6,
) -> WriteOutcome:
    """Store series observations (columns series, obs_date, value, source); same versioning as
    `write_bars`."""
    n = len(rows)
    staged = _stage(conn, rows, ("series", "obs_date"), ("value", "source"), ingested_at, "series")
    if staged is None:
        return WriteOutcome()
    key_codes, names, days, src_codes, sources = staged
    rec = _records(_SERIES_IN_DTYPE, n)
    rec["k"] = key_codes + 1
    rec["day"] = days.astype(np.int64) - _PG_EPOCH_DAYS
    rec["value"] = rows["value"].to_numpy(dtype=np.float64)
    rec["src"] = src_codes + 1
    rec["live"] = _seen_live(days, ingested_at)
    p = {"t": ingested_at, "tol": rel_tol, "sources": sources, "ingest": ingest_id}
    with _raw(conn).cursor() as cur:
        cur.execute(_SERIES_TEMP)
        _copy_in(cur, _SERIES_COPY_IN, rec)
        cur.execute(_SERIES_NAMES, {"names": names})
        if n > _ANALYZE_ROWS:
            cur.execute("ANALYZE md_series_in")
        inserted, revised, listed = _apply_versions(cur, _SERIES_SQL, p, "write_series", n)
    return WriteOutcome(inserted, revised, n - inserted - revised, listed)


# ------------------------------------------------------------------------------------------------
# Current versions and status

_CURRENT_BARS = text(
    "SELECT s.symbol, b.session, b.open, b.high, b.low, b.close, b.adj_close, b.volume, "
    "b.source, b.version, b.ingested_at, b.available_at "
    "FROM md_bars b JOIN md_symbols s ON s.id = b.symbol_id "
    "WHERE b.superseded_at IS NULL "
    "AND (CAST(:all AS boolean) OR s.symbol = ANY(CAST(:symbols AS varchar[]))) "
    "AND b.session >= :start AND b.session <= :end "
    "ORDER BY s.symbol, b.session"
)
_CURRENT_SERIES = text(
    "SELECT series, obs_date, value, source, version, ingested_at, available_at "
    "FROM md_series "
    "WHERE superseded_at IS NULL "
    "AND (CAST(:all AS boolean) OR series = ANY(CAST(:series AS varchar[]))) "
    "AND obs_date >= :start AND obs_date <= :end "
    "ORDER BY series, obs_date"
)
_BAR_COLUMNS: Final = (
    "symbol", "session", *FIELDS, "source", "version", "ingested_at", "available_at"
)  # fmt: skip
_SERIES_COLUMNS: Final = (
    "series", "obs_date", "value", "source", "version", "ingested_at", "available_at"
)  # fmt: skip


def _bounds(start: date | None, end: date | None) -> dict[str, date]:
    return {"start": start or date(1, 1, 1), "end": end or date(9999, 12, 31)}


def current_bars(
    conn: Connection, symbols: Sequence[str] | None, start: date | None, end: date | None
) -> pd.DataFrame:
    """Current versions of the bars of `symbols` (None = all) in [start, end] (None = open),
    sorted by (symbol, session): columns symbol, session (date), the fields, source, version,
    ingested_at, available_at. For an ingest's overlap, splice and revision checks."""
    rows = conn.execute(
        _CURRENT_BARS,
        {"all": symbols is None, "symbols": list(symbols or []), **_bounds(start, end)},
    ).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(_BAR_COLUMNS))


def current_series(
    conn: Connection, series: Sequence[str] | None, start: date | None, end: date | None
) -> pd.DataFrame:
    """Current versions of `series` (None = all) in [start, end]: columns series, obs_date,
    value, source, version, ingested_at, available_at, sorted by (series, obs_date)."""
    rows = conn.execute(
        _CURRENT_SERIES,
        {"all": series is None, "series": list(series or []), **_bounds(start, end)},
    ).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(_SERIES_COLUMNS))


# Symbols: the newest current bar through the partial index (one index probe per symbol), the
# version count through the small index of revised rows. Series: a few thousand rows per series.
_LAST_DATES = text(
    """
SELECT s.symbol, s.kind, b.session, b.source, b.ingested_at, COALESCE(v.versions, 1)
FROM md_symbols s
CROSS JOIN LATERAL (
  SELECT session, source, ingested_at FROM md_bars
  WHERE symbol_id = s.id AND superseded_at IS NULL
  ORDER BY session DESC LIMIT 1
) b
LEFT JOIN (
  SELECT symbol_id, max(version) AS versions FROM md_bars WHERE version > 1 GROUP BY symbol_id
) v ON v.symbol_id = s.id
UNION ALL
SELECT l.series, 'series', l.obs_date, l.source, l.ingested_at, v.versions
FROM (
  SELECT DISTINCT ON (series) series, obs_date, source, ingested_at FROM md_series
  WHERE superseded_at IS NULL ORDER BY series, obs_date DESC
) l
JOIN (SELECT series, max(version) AS versions FROM md_series GROUP BY series) v
  ON v.series = l.series
ORDER BY 2, 1
"""
)


def last_dates(conn: Connection) -> list[LastDate]:
    """One row per stored symbol (kind index|stock) and series (kind series), by kind then key."""
    return [
        LastDate(str(k), str(kind), d, str(src), seen, int(v))
        for k, kind, d, src, seen, v in conn.execute(_LAST_DATES)
    ]


# ------------------------------------------------------------------------------------------------
# Point-in-time reads (binary COPY)

# The bars come packed: one row per symbol, a bytea of its visible bars as fixed-width records
# (`_BARS_PACKED_DTYPE`). libpq delivers a COPY row per message, and iterating 1.2 M messages
# costs more on the client (~1.4 us each) than the server spends packing them.
_READ_BARS = """
COPY (
  SELECT string_agg(
           int4send(symbol_id) || int4send(session - DATE '2000-01-01')
           || float8send(open) || float8send(high) || float8send(low) || float8send(close)
           || float8send(adj_close) || float8send(volume),
           ''::bytea)
  FROM md_bars
  WHERE session <= %(end)s
    AND (available_at IS NULL OR available_at <= %(k)s)
    AND (superseded_at IS NULL OR superseded_at > %(k)s)
    AND (%(all)s OR symbol_id = ANY(%(ids)s::int4[]))
  GROUP BY symbol_id
) TO STDOUT (FORMAT binary)
"""
READ_WORK_MEM: Final = "256MB"
_READ_SETTINGS_GET = text(
    "SELECT current_setting('work_mem'), current_setting('max_parallel_workers_per_gather')"
)
_READ_SETTINGS_SET = text(
    "SELECT set_config('work_mem', :mem, true), "
    "set_config('max_parallel_workers_per_gather', :par, true)"
)
# The series code is the position in READ_SERIES (fixed-width rows: no varchar in the output).
_READ_SERIES = """
COPY (
  SELECT (CASE series WHEN 'VIX' THEN 0 WHEN 'UST10Y' THEN 1 WHEN 'UST2Y' THEN 2 ELSE 3 END)::int2,
         obs_date, value FROM md_series
  WHERE series IN ('VIX', 'UST10Y', 'UST2Y', 'BAA_AAA')
    AND obs_date <= %(end)s
    AND (available_at IS NULL OR available_at <= %(k)s)
    AND (superseded_at IS NULL OR superseded_at > %(k)s)
) TO STDOUT (FORMAT binary)
"""


def _copy_out(conn: Connection, statement: str, params: dict[str, Any]) -> bytearray:
    buf = bytearray()
    with _raw(conn).cursor() as cur, cur.copy(statement, params) as cp:
        for data in cp:  # one message per row (libpq): keep the loop body minimal
            buf += data
    return buf


@dataclass(frozen=True)
class VisibleRows:
    """Rows visible as of a date, unordered: `key` (symbol id, or the position of the series in
    `READ_SERIES`), `day` (int days since 1970-01-01) and per value column a float array (a
    big-endian view into the COPY buffer: numpy converts it wherever it is copied to)."""

    key: np.ndarray
    day: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.key)


def _visible(rec: np.ndarray, key: str, fields: Sequence[str]) -> VisibleRows:
    return VisibleRows(
        key=rec[key].astype(np.int64),
        day=rec["day"].astype(np.int64) + _PG_EPOCH_DAYS,
        values={f: rec[f] for f in fields},
    )


def read_visible_bars(
    conn: Connection, *, end: date, known_at: datetime, symbol_ids: Sequence[int] | None = None
) -> VisibleRows:
    """The bar versions visible as of `end` at knowledge time `known_at` (module docstring),
    of `symbol_ids` (None = all): one binary COPY, parsed with a numpy record dtype."""
    _check_time(known_at)
    p: dict[str, Any] = {"end": end, "k": known_at}
    # The packing aggregate holds the result (~56 bytes a bar) in memory: enough work_mem not to
    # spill it to disk, and no parallel plan (partial aggregates, a merge and a re-concatenation
    # cost more CPU than they save). Restored afterwards: this is the caller's transaction.
    saved = conn.execute(_READ_SETTINGS_GET).one()
    conn.execute(_READ_SETTINGS_SET, {"mem": READ_WORK_MEM, "par": "0"})
    try:
        ids = [] if symbol_ids is None else [int(i) for i in symbol_ids]
        buf = _copy_out(conn, _READ_BARS, {**p, "all": symbol_ids is None, "ids": ids})
    finally:
        conn.execute(_READ_SETTINGS_SET, {"mem": saved[0], "par": saved[1]})
    return _visible(_unpack_bytea_rows(buf, _BARS_PACKED_DTYPE), "symbol_id", FIELDS)


def read_visible_series(conn: Connection, *, end: date, known_at: datetime) -> VisibleRows:
    """The `READ_SERIES` observations visible as of `end` at `known_at`."""
    _check_time(known_at)
    buf = _copy_out(conn, _READ_SERIES, {"end": end, "k": known_at})
    return _visible(_parse_copy(buf, _SERIES_OUT_DTYPE), "k", ("value",))


# ------------------------------------------------------------------------------------------------
# The embedded dataset as the first vintage

# Serialises vintage loads (the second waits, then finds the first one's work done).
VINTAGE_LOCK_ID: Final = 0x0B10A5D2


@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _embedded_last() -> date:
    from bloasis.marketdata.sources import EMBEDDED_PATH, _read_embedded

    e = _read_embedded(str(EMBEDDED_PATH))
    return pd.Timestamp(e.sessions[-1]).date()


def _embedded_frames(
    after: date | None, through: date | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[SymbolInfo]]:
    """The embedded observations dated in (after, through]: bars, series and the symbols."""
    from bloasis.marketdata.sources import EMBEDDED_PATH, _read_embedded
    from bloasis.marketdata.validate import INDEX_SYMBOL

    e = _read_embedded(str(EMBEDDED_PATH))
    sess = e.sessions.values.astype("datetime64[D]")
    lo = np.datetime64(after, "D") if after else np.datetime64("0001-01-01", "D")
    hi = np.datetime64(through, "D") if through else np.datetime64("9999-12-31", "D")

    def keep(days: np.ndarray) -> np.ndarray:
        return (days > lo) & (days <= hi)

    k = keep(sess)
    idx = pd.DataFrame(
        {
            "symbol": INDEX_SYMBOL,
            "session": sess[k],
            **{f: e.index_bars[f][k] for f in ("open", "high", "low", "close")},
            "adj_close": e.index_bars["close"][k],
            "volume": e.index_bars["volume"][k],
        }
    )
    closes = np.asarray(e.closes)
    r, c = np.nonzero(np.isfinite(closes) & k[:, None])
    px = closes[r, c]
    nan = np.full(len(r), np.nan)
    stocks = pd.DataFrame(
        {
            "symbol": np.asarray(e.symbols, dtype=object)[c],
            "session": sess[r],
            "open": nan,
            "high": nan,
            "low": nan,
            "close": px,
            "adj_close": px,
            "volume": nan,
        }
    )
    bars = pd.concat([idx, stocks], ignore_index=True)
    bars["source"] = EMBEDDED_SOURCE

    def series(name: str, days: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        ok = np.isfinite(values) & keep(days)
        return pd.DataFrame({"series": name, "obs_date": days[ok], "value": values[ok]})

    ust_days = e.ust_days.astype("datetime64[D]")
    ser = pd.concat(
        [
            series(VIX_SERIES, sess, np.asarray(e.vix)),
            series(UST10Y_SERIES, ust_days, np.asarray(e.ust10y)),
            series(UST2Y_SERIES, ust_days, np.asarray(e.ust2y)),
            series(CREDIT_SERIES, e.credit_months.astype("datetime64[D]"), e.credit_spread),
        ],
        ignore_index=True,
    )
    ser["source"] = EMBEDDED_SOURCE
    symbols = [SymbolInfo(INDEX_SYMBOL, "index", "S&P 500", None)] + [
        SymbolInfo(s, "stock", None, sec) for s, sec in zip(e.symbols, e.sectors, strict=True)
    ]
    return bars, ser, symbols


def load_embedded_vintage(
    engine: Engine, *, through: date | None = None, now: datetime | None = None
) -> VintageOutcome:
    """Store the embedded dataset's observations dated <= `through` (default: all) as a vintage
    (ingest kind ``vintage``, source ``embedded``), in one transaction.

    Idempotent and cheap to repeat: completed embedded vintages record the dataset's sha256 and
    the date they cover, so a call covered by them does nothing (no ingest row), and a later
    call with a larger `through` writes only the observations after the covered date. A rebuilt
    dataset (another sha256) is written whole: equal values are unchanged, changed ones become
    revisions. `now` is the ingest time (default: the clock)."""
    from bloasis.marketdata.sources import EMBEDDED_PATH

    t0 = time.perf_counter()
    now = now or datetime.now(UTC)
    _check_time(now)
    sha = _file_sha256(str(EMBEDDED_PATH), EMBEDDED_PATH.stat().st_mtime_ns)
    params: dict[str, Any] = {"dataset": EMBEDDED_PATH.name, "sha256": sha}
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": VINTAGE_LOCK_ID})
            done = conn.execute(
                select(_INGESTS.c.params).where(
                    _INGESTS.c.kind == "vintage",
                    _INGESTS.c.source == EMBEDDED_SOURCE,
                    _INGESTS.c.status == "completed",
                )
            ).scalars()
            covered = max(
                (date.fromisoformat(p["through"]) for p in done if p.get("sha256") == sha),
                default=None,
            )
            last = _embedded_last()
            want = min(through, last) if through else last
            if covered is not None and covered >= want:
                return VintageOutcome(None, covered, WriteOutcome(), WriteOutcome(), 0.0)
            params["after"] = covered.isoformat() if covered else None
            params["through"] = want.isoformat()
            bars, ser, symbols = _embedded_frames(covered, want)
            ingest_id = begin_ingest(conn, kind="vintage", source=EMBEDDED_SOURCE, params=params)
            upsert_symbols(conn, symbols)
            b = write_bars(conn, bars, ingest_id=ingest_id, ingested_at=now)
            s = write_series(conn, ser, ingest_id=ingest_id, ingested_at=now)
            seconds = time.perf_counter() - t0
            result = {"bars": b.summary(), "series": s.summary(), "seconds": round(seconds, 3)}
            finish_ingest(conn, ingest_id, status="completed", result=result)
    except Exception as exc:
        # The load rolled back; the log still says it was tried and why it failed (best
        # effort: with the database down this cannot be written either).
        with contextlib.suppress(Exception), engine.begin() as conn:
            failed = begin_ingest(conn, kind="vintage", source=EMBEDDED_SOURCE, params=params)
            finish_ingest(
                conn, failed, status="failed", error=f"{type(exc).__name__}: {exc}"[:4000]
            )
        raise
    return VintageOutcome(ingest_id, want, b, s, time.perf_counter() - t0)


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "FIELDS",
    "READ_SERIES",
    "LastDate",
    "Revision",
    "SymbolInfo",
    "VintageOutcome",
    "VisibleRows",
    "WriteOutcome",
    "begin_ingest",
    "current_bars",
    "current_series",
    "cutoff_of",
    "finish_ingest",
    "last_dates",
    "load_embedded_vintage",
    "read_visible_bars",
    "read_visible_series",
    "recent_ingests",
    "upsert_symbols",
    "utc_now",
    "write_bars",
    "write_series",
]
