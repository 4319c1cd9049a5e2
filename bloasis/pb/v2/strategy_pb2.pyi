import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from bloasis.pb.v2 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStrategyRequest(_message.Message):
    __slots__ = ("user_id", "risk_profile", "as_of", "symbols")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    risk_profile: str
    as_of: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., risk_profile: _Optional[str] = ..., as_of: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class Pick(_message.Message):
    __slots__ = ("symbol", "sector", "rank", "final_score", "factor_scores", "rationale")
    class FactorScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    FACTOR_SCORES_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    sector: str
    rank: int
    final_score: float
    factor_scores: _containers.ScalarMap[str, float]
    rationale: str
    def __init__(self, symbol: _Optional[str] = ..., sector: _Optional[str] = ..., rank: _Optional[int] = ..., final_score: _Optional[float] = ..., factor_scores: _Optional[_Mapping[str, float]] = ..., rationale: _Optional[str] = ...) -> None: ...

class ProfitTier(_message.Message):
    __slots__ = ("level", "size_pct")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SIZE_PCT_FIELD_NUMBER: _ClassVar[int]
    level: str
    size_pct: str
    def __init__(self, level: _Optional[str] = ..., size_pct: _Optional[str] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("symbol", "sector", "action", "weight", "entry_price", "stop_loss", "profit_tiers", "trailing_stop_pct")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    PROFIT_TIERS_FIELD_NUMBER: _ClassVar[int]
    TRAILING_STOP_PCT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    sector: str
    action: str
    weight: str
    entry_price: str
    stop_loss: str
    profit_tiers: _containers.RepeatedCompositeFieldContainer[ProfitTier]
    trailing_stop_pct: str
    def __init__(self, symbol: _Optional[str] = ..., sector: _Optional[str] = ..., action: _Optional[str] = ..., weight: _Optional[str] = ..., entry_price: _Optional[str] = ..., stop_loss: _Optional[str] = ..., profit_tiers: _Optional[_Iterable[_Union[ProfitTier, _Mapping]]] = ..., trailing_stop_pct: _Optional[str] = ...) -> None: ...

class Strategy(_message.Message):
    __slots__ = ("strategy_id", "as_of", "risk_profile", "user_id", "picks", "signals", "cash_weight", "rationale", "run_id", "model_version", "computed_at", "profile_strategy_id", "regime", "risk_level")
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PICKS_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    CASH_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    strategy_id: str
    as_of: str
    risk_profile: str
    user_id: str
    picks: _containers.RepeatedCompositeFieldContainer[Pick]
    signals: _containers.RepeatedCompositeFieldContainer[Signal]
    cash_weight: str
    rationale: str
    run_id: str
    model_version: str
    computed_at: _timestamp_pb2.Timestamp
    profile_strategy_id: str
    regime: str
    risk_level: str
    def __init__(self, strategy_id: _Optional[str] = ..., as_of: _Optional[str] = ..., risk_profile: _Optional[str] = ..., user_id: _Optional[str] = ..., picks: _Optional[_Iterable[_Union[Pick, _Mapping]]] = ..., signals: _Optional[_Iterable[_Union[Signal, _Mapping]]] = ..., cash_weight: _Optional[str] = ..., rationale: _Optional[str] = ..., run_id: _Optional[str] = ..., model_version: _Optional[str] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile_strategy_id: _Optional[str] = ..., regime: _Optional[str] = ..., risk_level: _Optional[str] = ...) -> None: ...

class StrategyResponse(_message.Message):
    __slots__ = ("strategy", "regime", "served_from")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    strategy: Strategy
    regime: _common_pb2.MarketRegime
    served_from: str
    def __init__(self, strategy: _Optional[_Union[Strategy, _Mapping]] = ..., regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., served_from: _Optional[str] = ...) -> None: ...

class GetStockPicksResponse(_message.Message):
    __slots__ = ("strategy_id", "as_of", "picks", "regime", "served_from")
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    PICKS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    strategy_id: str
    as_of: str
    picks: _containers.RepeatedCompositeFieldContainer[Pick]
    regime: _common_pb2.MarketRegime
    served_from: str
    def __init__(self, strategy_id: _Optional[str] = ..., as_of: _Optional[str] = ..., picks: _Optional[_Iterable[_Union[Pick, _Mapping]]] = ..., regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., served_from: _Optional[str] = ...) -> None: ...

class GetPreferencesRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class UserPreferences(_message.Message):
    __slots__ = ("user_id", "risk_profile", "preferred_sectors", "excluded_sectors", "max_single_position", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_SINGLE_POSITION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    risk_profile: str
    preferred_sectors: _containers.RepeatedScalarFieldContainer[str]
    excluded_sectors: _containers.RepeatedScalarFieldContainer[str]
    max_single_position: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., risk_profile: _Optional[str] = ..., preferred_sectors: _Optional[_Iterable[str]] = ..., excluded_sectors: _Optional[_Iterable[str]] = ..., max_single_position: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdatePreferencesRequest(_message.Message):
    __slots__ = ("preferences",)
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    preferences: UserPreferences
    def __init__(self, preferences: _Optional[_Union[UserPreferences, _Mapping]] = ...) -> None: ...
