import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Indicators(_message.Message):
    __slots__ = ("vix", "vix_is_proxy", "sp500_trend", "sp500_close", "yield_curve", "yield_curve_state", "credit_spread", "credit_spread_state", "drawdown", "sma200_gap", "sma200_slope", "daily_return", "high_vol_prob", "rule_confidence", "decided_by", "realised_vol", "rebound")
    VIX_FIELD_NUMBER: _ClassVar[int]
    VIX_IS_PROXY_FIELD_NUMBER: _ClassVar[int]
    SP500_TREND_FIELD_NUMBER: _ClassVar[int]
    SP500_CLOSE_FIELD_NUMBER: _ClassVar[int]
    YIELD_CURVE_FIELD_NUMBER: _ClassVar[int]
    YIELD_CURVE_STATE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_SPREAD_FIELD_NUMBER: _ClassVar[int]
    CREDIT_SPREAD_STATE_FIELD_NUMBER: _ClassVar[int]
    DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    SMA200_GAP_FIELD_NUMBER: _ClassVar[int]
    SMA200_SLOPE_FIELD_NUMBER: _ClassVar[int]
    DAILY_RETURN_FIELD_NUMBER: _ClassVar[int]
    HIGH_VOL_PROB_FIELD_NUMBER: _ClassVar[int]
    RULE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    REALISED_VOL_FIELD_NUMBER: _ClassVar[int]
    REBOUND_FIELD_NUMBER: _ClassVar[int]
    vix: float
    vix_is_proxy: bool
    sp500_trend: str
    sp500_close: float
    yield_curve: float
    yield_curve_state: str
    credit_spread: float
    credit_spread_state: str
    drawdown: float
    sma200_gap: float
    sma200_slope: float
    daily_return: float
    high_vol_prob: float
    rule_confidence: float
    decided_by: str
    realised_vol: float
    rebound: float
    def __init__(self, vix: _Optional[float] = ..., vix_is_proxy: _Optional[bool] = ..., sp500_trend: _Optional[str] = ..., sp500_close: _Optional[float] = ..., yield_curve: _Optional[float] = ..., yield_curve_state: _Optional[str] = ..., credit_spread: _Optional[float] = ..., credit_spread_state: _Optional[str] = ..., drawdown: _Optional[float] = ..., sma200_gap: _Optional[float] = ..., sma200_slope: _Optional[float] = ..., daily_return: _Optional[float] = ..., high_vol_prob: _Optional[float] = ..., rule_confidence: _Optional[float] = ..., decided_by: _Optional[str] = ..., realised_vol: _Optional[float] = ..., rebound: _Optional[float] = ...) -> None: ...

class MarketRegime(_message.Message):
    __slots__ = ("regime", "confidence", "risk_level", "trigger", "reasoning", "indicators", "as_of", "computed_at", "model_version", "run_id", "override")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    regime: str
    confidence: float
    risk_level: str
    trigger: str
    reasoning: str
    indicators: Indicators
    as_of: str
    computed_at: _timestamp_pb2.Timestamp
    model_version: str
    run_id: str
    override: bool
    def __init__(self, regime: _Optional[str] = ..., confidence: _Optional[float] = ..., risk_level: _Optional[str] = ..., trigger: _Optional[str] = ..., reasoning: _Optional[str] = ..., indicators: _Optional[_Union[Indicators, _Mapping]] = ..., as_of: _Optional[str] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_version: _Optional[str] = ..., run_id: _Optional[str] = ..., override: _Optional[bool] = ...) -> None: ...
