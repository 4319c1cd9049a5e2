import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunBacktestRequest(_message.Message):
    __slots__ = ("profiles", "user_ids", "start", "end", "rebalance", "commission", "slippage", "initial_cash", "symbols")
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    start: str
    end: str
    rebalance: str
    commission: str
    slippage: str
    initial_cash: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, profiles: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., rebalance: _Optional[str] = ..., commission: _Optional[str] = ..., slippage: _Optional[str] = ..., initial_cash: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class RunBacktestResponse(_message.Message):
    __slots__ = ("backtest_id", "found", "status")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    found: bool
    status: str
    def __init__(self, backtest_id: _Optional[str] = ..., found: _Optional[bool] = ..., status: _Optional[str] = ...) -> None: ...

class GetBacktestResultsRequest(_message.Message):
    __slots__ = ("backtest_id",)
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    def __init__(self, backtest_id: _Optional[str] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("name", "benchmark", "total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate", "profit_factor", "trades", "avg_holding_sessions", "turnover", "exposure", "stops", "tiers", "costs", "sessions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RETURN_FIELD_NUMBER: _ClassVar[int]
    CAGR_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    SHARPE_FIELD_NUMBER: _ClassVar[int]
    SORTINO_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    CALMAR_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    PROFIT_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TRADES_FIELD_NUMBER: _ClassVar[int]
    AVG_HOLDING_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TURNOVER_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    STOPS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    benchmark: bool
    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    calmar: float
    win_rate: float
    profit_factor: float
    trades: int
    avg_holding_sessions: float
    turnover: float
    exposure: float
    stops: int
    tiers: int
    costs: str
    sessions: int
    def __init__(self, name: _Optional[str] = ..., benchmark: _Optional[bool] = ..., total_return: _Optional[float] = ..., cagr: _Optional[float] = ..., volatility: _Optional[float] = ..., sharpe: _Optional[float] = ..., sortino: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., calmar: _Optional[float] = ..., win_rate: _Optional[float] = ..., profit_factor: _Optional[float] = ..., trades: _Optional[int] = ..., avg_holding_sessions: _Optional[float] = ..., turnover: _Optional[float] = ..., exposure: _Optional[float] = ..., stops: _Optional[int] = ..., tiers: _Optional[int] = ..., costs: _Optional[str] = ..., sessions: _Optional[int] = ...) -> None: ...

class MetricsGroup(_message.Message):
    __slots__ = ("label", "start", "end", "portfolios")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIOS_FIELD_NUMBER: _ClassVar[int]
    label: str
    start: str
    end: str
    portfolios: _containers.RepeatedCompositeFieldContainer[Metrics]
    def __init__(self, label: _Optional[str] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., portfolios: _Optional[_Iterable[_Union[Metrics, _Mapping]]] = ...) -> None: ...

class BacktestResults(_message.Message):
    __slots__ = ("backtest_id", "status", "progress", "message", "error", "start", "end", "rebalance", "commission", "slippage", "initial_cash", "symbols", "profiles", "user_ids", "top_n", "model_version", "data_snapshot_hash", "created_at", "finished_at", "first_session", "last_session", "portfolios", "in_sample", "out_of_sample", "per_regime", "per_year", "notes", "execution")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_SNAPSHOT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SESSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SESSION_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIOS_FIELD_NUMBER: _ClassVar[int]
    IN_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PER_REGIME_FIELD_NUMBER: _ClassVar[int]
    PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    status: str
    progress: float
    message: str
    error: str
    start: str
    end: str
    rebalance: str
    commission: str
    slippage: str
    initial_cash: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    profiles: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    model_version: str
    data_snapshot_hash: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    first_session: str
    last_session: str
    portfolios: _containers.RepeatedCompositeFieldContainer[Metrics]
    in_sample: MetricsGroup
    out_of_sample: MetricsGroup
    per_regime: _containers.RepeatedCompositeFieldContainer[MetricsGroup]
    per_year: _containers.RepeatedCompositeFieldContainer[MetricsGroup]
    notes: _containers.RepeatedScalarFieldContainer[str]
    execution: str
    def __init__(self, backtest_id: _Optional[str] = ..., status: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., error: _Optional[str] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., rebalance: _Optional[str] = ..., commission: _Optional[str] = ..., slippage: _Optional[str] = ..., initial_cash: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., profiles: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., model_version: _Optional[str] = ..., data_snapshot_hash: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_session: _Optional[str] = ..., last_session: _Optional[str] = ..., portfolios: _Optional[_Iterable[_Union[Metrics, _Mapping]]] = ..., in_sample: _Optional[_Union[MetricsGroup, _Mapping]] = ..., out_of_sample: _Optional[_Union[MetricsGroup, _Mapping]] = ..., per_regime: _Optional[_Iterable[_Union[MetricsGroup, _Mapping]]] = ..., per_year: _Optional[_Iterable[_Union[MetricsGroup, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ..., execution: _Optional[str] = ...) -> None: ...

class CompareStrategiesRequest(_message.Message):
    __slots__ = ("backtest_ids",)
    BACKTEST_IDS_FIELD_NUMBER: _ClassVar[int]
    backtest_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backtest_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("rank", "backtest_id", "metrics", "start", "end", "rebalance")
    RANK_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    backtest_id: str
    metrics: Metrics
    start: str
    end: str
    rebalance: str
    def __init__(self, rank: _Optional[int] = ..., backtest_id: _Optional[str] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., rebalance: _Optional[str] = ...) -> None: ...

class CompareStrategiesResponse(_message.Message):
    __slots__ = ("comparisons", "best_backtest_id", "skipped")
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    BEST_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    comparisons: _containers.RepeatedCompositeFieldContainer[Comparison]
    best_backtest_id: str
    skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, comparisons: _Optional[_Iterable[_Union[Comparison, _Mapping]]] = ..., best_backtest_id: _Optional[str] = ..., skipped: _Optional[_Iterable[str]] = ...) -> None: ...
