from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RiskProfile(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_PROFILE_UNSPECIFIED: _ClassVar[RiskProfile]
    CONSERVATIVE: _ClassVar[RiskProfile]
    MODERATE: _ClassVar[RiskProfile]
    AGGRESSIVE: _ClassVar[RiskProfile]
RISK_PROFILE_UNSPECIFIED: RiskProfile
CONSERVATIVE: RiskProfile
MODERATE: RiskProfile
AGGRESSIVE: RiskProfile

class StockPicksRequest(_message.Message):
    __slots__ = ("user_id", "max_picks")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PICKS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    max_picks: int
    def __init__(self, user_id: _Optional[str] = ..., max_picks: _Optional[int] = ...) -> None: ...

class StockPicksResponse(_message.Message):
    __slots__ = ("picks", "regime", "applied_preferences", "generated_at")
    PICKS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    picks: _containers.RepeatedCompositeFieldContainer[StockPick]
    regime: str
    applied_preferences: UserPreferences
    generated_at: str
    def __init__(self, picks: _Optional[_Iterable[_Union[StockPick, _Mapping]]] = ..., regime: _Optional[str] = ..., applied_preferences: _Optional[_Union[UserPreferences, _Mapping]] = ..., generated_at: _Optional[str] = ...) -> None: ...

class StockPick(_message.Message):
    __slots__ = ("symbol", "sector", "theme", "factor_scores", "final_score", "rank", "rationale")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    THEME_FIELD_NUMBER: _ClassVar[int]
    FACTOR_SCORES_FIELD_NUMBER: _ClassVar[int]
    FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    sector: str
    theme: str
    factor_scores: FactorScores
    final_score: float
    rank: int
    rationale: str
    def __init__(self, symbol: _Optional[str] = ..., sector: _Optional[str] = ..., theme: _Optional[str] = ..., factor_scores: _Optional[_Union[FactorScores, _Mapping]] = ..., final_score: _Optional[float] = ..., rank: _Optional[int] = ..., rationale: _Optional[str] = ...) -> None: ...

class FactorScores(_message.Message):
    __slots__ = ("momentum", "value", "quality", "volatility", "liquidity", "sentiment")
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    LIQUIDITY_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    momentum: float
    value: float
    quality: float
    volatility: float
    liquidity: float
    sentiment: float
    def __init__(self, momentum: _Optional[float] = ..., value: _Optional[float] = ..., quality: _Optional[float] = ..., volatility: _Optional[float] = ..., liquidity: _Optional[float] = ..., sentiment: _Optional[float] = ...) -> None: ...

class StrategyRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class StrategyResponse(_message.Message):
    __slots__ = ("user_id", "regime", "selected_sectors", "top_themes", "stock_picks", "preferences", "cached_at", "from_cache", "signals")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SELECTED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    TOP_THEMES_FIELD_NUMBER: _ClassVar[int]
    STOCK_PICKS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    CACHED_AT_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    regime: str
    selected_sectors: _containers.RepeatedScalarFieldContainer[str]
    top_themes: _containers.RepeatedScalarFieldContainer[str]
    stock_picks: _containers.RepeatedCompositeFieldContainer[StockPick]
    preferences: UserPreferences
    cached_at: str
    from_cache: bool
    signals: _containers.RepeatedCompositeFieldContainer[TradingSignal]
    def __init__(self, user_id: _Optional[str] = ..., regime: _Optional[str] = ..., selected_sectors: _Optional[_Iterable[str]] = ..., top_themes: _Optional[_Iterable[str]] = ..., stock_picks: _Optional[_Iterable[_Union[StockPick, _Mapping]]] = ..., preferences: _Optional[_Union[UserPreferences, _Mapping]] = ..., cached_at: _Optional[str] = ..., from_cache: _Optional[bool] = ..., signals: _Optional[_Iterable[_Union[TradingSignal, _Mapping]]] = ...) -> None: ...

class UserPreferences(_message.Message):
    __slots__ = ("user_id", "risk_profile", "preferred_sectors", "excluded_sectors", "max_single_position")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_SINGLE_POSITION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    risk_profile: RiskProfile
    preferred_sectors: _containers.RepeatedScalarFieldContainer[str]
    excluded_sectors: _containers.RepeatedScalarFieldContainer[str]
    max_single_position: float
    def __init__(self, user_id: _Optional[str] = ..., risk_profile: _Optional[_Union[RiskProfile, str]] = ..., preferred_sectors: _Optional[_Iterable[str]] = ..., excluded_sectors: _Optional[_Iterable[str]] = ..., max_single_position: _Optional[float] = ...) -> None: ...

class UpdatePreferencesRequest(_message.Message):
    __slots__ = ("user_id", "risk_profile", "preferred_sectors", "excluded_sectors", "max_single_position")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_SINGLE_POSITION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    risk_profile: RiskProfile
    preferred_sectors: _containers.RepeatedScalarFieldContainer[str]
    excluded_sectors: _containers.RepeatedScalarFieldContainer[str]
    max_single_position: float
    def __init__(self, user_id: _Optional[str] = ..., risk_profile: _Optional[_Union[RiskProfile, str]] = ..., preferred_sectors: _Optional[_Iterable[str]] = ..., excluded_sectors: _Optional[_Iterable[str]] = ..., max_single_position: _Optional[float] = ...) -> None: ...

class UpdatePreferencesResponse(_message.Message):
    __slots__ = ("success", "preferences")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    success: bool
    preferences: UserPreferences
    def __init__(self, success: _Optional[bool] = ..., preferences: _Optional[_Union[UserPreferences, _Mapping]] = ...) -> None: ...

class ProfitTier(_message.Message):
    __slots__ = ("level", "size_pct")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SIZE_PCT_FIELD_NUMBER: _ClassVar[int]
    level: float
    size_pct: float
    def __init__(self, level: _Optional[float] = ..., size_pct: _Optional[float] = ...) -> None: ...

class GetPreferencesRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class RunAIAnalysisRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class TradingSignal(_message.Message):
    __slots__ = ("symbol", "action", "confidence", "size_recommendation", "entry_price", "stop_loss", "take_profit", "rationale", "risk_approved", "profit_tiers", "trailing_stop_pct")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    ENTRY_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    RISK_APPROVED_FIELD_NUMBER: _ClassVar[int]
    PROFIT_TIERS_FIELD_NUMBER: _ClassVar[int]
    TRAILING_STOP_PCT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    action: str
    confidence: float
    size_recommendation: float
    entry_price: float
    stop_loss: float
    take_profit: float
    rationale: str
    risk_approved: bool
    profit_tiers: _containers.RepeatedCompositeFieldContainer[ProfitTier]
    trailing_stop_pct: float
    def __init__(self, symbol: _Optional[str] = ..., action: _Optional[str] = ..., confidence: _Optional[float] = ..., size_recommendation: _Optional[float] = ..., entry_price: _Optional[float] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., rationale: _Optional[str] = ..., risk_approved: _Optional[bool] = ..., profit_tiers: _Optional[_Iterable[_Union[ProfitTier, _Mapping]]] = ..., trailing_stop_pct: _Optional[float] = ...) -> None: ...

class RunAIAnalysisResponse(_message.Message):
    __slots__ = ("analysis_id", "user_id", "phase", "signals", "signals_published", "errors")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    user_id: str
    phase: str
    signals: _containers.RepeatedCompositeFieldContainer[TradingSignal]
    signals_published: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, analysis_id: _Optional[str] = ..., user_id: _Optional[str] = ..., phase: _Optional[str] = ..., signals: _Optional[_Iterable[_Union[TradingSignal, _Mapping]]] = ..., signals_published: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
