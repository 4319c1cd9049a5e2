"""Market data: the `MarketData` container, its sources, validation and a synthetic generator.

Typical use::

    from bloasis.marketdata import default_source

    md = default_source().load()          # embedded real data, offline
    view = md.as_of("2008-10-15")         # point in time: nothing published after that day
    lineage = md.snapshot_hash()
"""

from bloasis.calendar import sessions as nyse_sessions
from bloasis.marketdata.sources import (
    DataQualityWarning,
    EmbeddedSource,
    FileSource,
    PitParams,
    default_source,
    write_csv,
)
from bloasis.marketdata.synthetic import SyntheticSource, SyntheticUniverse, generate
from bloasis.marketdata.types import (
    GICS_SECTORS,
    MARKET_COLUMNS,
    OHLCV_FIELDS,
    DataFormatError,
    DataIssue,
    DataValidationError,
    MarketData,
    MarketDataSource,
)
from bloasis.marketdata.validate import validate, validate_bars

__all__ = [
    "GICS_SECTORS",
    "MARKET_COLUMNS",
    "OHLCV_FIELDS",
    "DataFormatError",
    "DataIssue",
    "DataQualityWarning",
    "DataValidationError",
    "EmbeddedSource",
    "FileSource",
    "MarketData",
    "MarketDataSource",
    "PitParams",
    "SyntheticSource",
    "SyntheticUniverse",
    "default_source",
    "generate",
    "nyse_sessions",
    "validate",
    "validate_bars",
    "write_csv",
]
