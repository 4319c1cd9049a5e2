from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BacktestRequest(_message.Message):
    __slots__ = ("user_id", "symbols", "strategy_type", "config", "period")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    strategy_type: str
    config: BacktestConfig
    period: str
    def __init__(self, user_id: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., strategy_type: _Optional[str] = ..., config: _Optional[_Union[BacktestConfig, _Mapping]] = ..., period: _Optional[str] = ...) -> None: ...

class BacktestConfig(_message.Message):
    __slots__ = ("initial_cash", "commission", "slippage", "stop_loss", "take_profit")
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    initial_cash: float
    commission: float
    slippage: float
    stop_loss: float
    take_profit: float
    def __init__(self, initial_cash: _Optional[float] = ..., commission: _Optional[float] = ..., slippage: _Optional[float] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ...) -> None: ...

class BacktestResponse(_message.Message):
    __slots__ = ("backtest_id", "results", "portfolio_metrics", "created_at", "status", "progress", "message", "error")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIO_METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    results: _containers.RepeatedCompositeFieldContainer[SymbolResult]
    portfolio_metrics: PortfolioMetrics
    created_at: str
    status: str
    progress: float
    message: str
    error: str
    def __init__(self, backtest_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[SymbolResult, _Mapping]]] = ..., portfolio_metrics: _Optional[_Union[PortfolioMetrics, _Mapping]] = ..., created_at: _Optional[str] = ..., status: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SymbolResult(_message.Message):
    __slots__ = ("symbol", "total_return", "sharpe_ratio", "sortino_ratio", "max_drawdown", "win_rate", "profit_factor", "total_trades", "avg_trade_duration_days", "calmar_ratio", "passed")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RETURN_FIELD_NUMBER: _ClassVar[int]
    SHARPE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SORTINO_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    PROFIT_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRADES_FIELD_NUMBER: _ClassVar[int]
    AVG_TRADE_DURATION_DAYS_FIELD_NUMBER: _ClassVar[int]
    CALMAR_RATIO_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    total_return: float
    sharpe_ratio: float
    sortino_ratio: float
    max_drawdown: float
    win_rate: float
    profit_factor: float
    total_trades: int
    avg_trade_duration_days: float
    calmar_ratio: float
    passed: bool
    def __init__(self, symbol: _Optional[str] = ..., total_return: _Optional[float] = ..., sharpe_ratio: _Optional[float] = ..., sortino_ratio: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., win_rate: _Optional[float] = ..., profit_factor: _Optional[float] = ..., total_trades: _Optional[int] = ..., avg_trade_duration_days: _Optional[float] = ..., calmar_ratio: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class PortfolioMetrics(_message.Message):
    __slots__ = ("total_return", "sharpe_ratio", "max_drawdown", "volatility")
    TOTAL_RETURN_FIELD_NUMBER: _ClassVar[int]
    SHARPE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    total_return: float
    sharpe_ratio: float
    max_drawdown: float
    volatility: float
    def __init__(self, total_return: _Optional[float] = ..., sharpe_ratio: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., volatility: _Optional[float] = ...) -> None: ...

class RLBacktestRequest(_message.Message):
    __slots__ = ("user_id", "symbols", "rl_algorithm", "config", "train_timesteps", "period")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    RL_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    rl_algorithm: str
    config: BacktestConfig
    train_timesteps: int
    period: str
    def __init__(self, user_id: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., rl_algorithm: _Optional[str] = ..., config: _Optional[_Union[BacktestConfig, _Mapping]] = ..., train_timesteps: _Optional[int] = ..., period: _Optional[str] = ...) -> None: ...

class GetResultsRequest(_message.Message):
    __slots__ = ("backtest_id",)
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    def __init__(self, backtest_id: _Optional[str] = ...) -> None: ...

class GetResultsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: BacktestResponse
    def __init__(self, results: _Optional[_Union[BacktestResponse, _Mapping]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("backtest_ids",)
    BACKTEST_IDS_FIELD_NUMBER: _ClassVar[int]
    backtest_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backtest_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("comparisons", "best_strategy_id")
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    BEST_STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    comparisons: _containers.RepeatedCompositeFieldContainer[BacktestComparison]
    best_strategy_id: str
    def __init__(self, comparisons: _Optional[_Iterable[_Union[BacktestComparison, _Mapping]]] = ..., best_strategy_id: _Optional[str] = ...) -> None: ...

class BacktestComparison(_message.Message):
    __slots__ = ("backtest_id", "strategy_name", "metrics", "rank")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    strategy_name: str
    metrics: PortfolioMetrics
    rank: int
    def __init__(self, backtest_id: _Optional[str] = ..., strategy_name: _Optional[str] = ..., metrics: _Optional[_Union[PortfolioMetrics, _Mapping]] = ..., rank: _Optional[int] = ...) -> None: ...
