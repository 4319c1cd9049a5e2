from google.api import annotations_pb2 as _annotations_pb2
from bloasis.pb.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCurrentRegimeRequest(_message.Message):
    __slots__ = ("force_refresh", "user_id")
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    force_refresh: bool
    user_id: str
    def __init__(self, force_refresh: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class MarketIndicators(_message.Message):
    __slots__ = ("vix", "sp500_trend", "yield_curve", "credit_spreads")
    VIX_FIELD_NUMBER: _ClassVar[int]
    SP500_TREND_FIELD_NUMBER: _ClassVar[int]
    YIELD_CURVE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_SPREADS_FIELD_NUMBER: _ClassVar[int]
    vix: float
    sp500_trend: str
    yield_curve: str
    credit_spreads: str
    def __init__(self, vix: _Optional[float] = ..., sp500_trend: _Optional[str] = ..., yield_curve: _Optional[str] = ..., credit_spreads: _Optional[str] = ...) -> None: ...

class GetCurrentRegimeResponse(_message.Message):
    __slots__ = ("regime", "confidence", "timestamp", "trigger", "reasoning", "risk_level", "indicators", "as_of", "model_version", "override", "served_from")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    regime: str
    confidence: float
    timestamp: str
    trigger: str
    reasoning: str
    risk_level: str
    indicators: MarketIndicators
    as_of: str
    model_version: str
    override: bool
    served_from: str
    def __init__(self, regime: _Optional[str] = ..., confidence: _Optional[float] = ..., timestamp: _Optional[str] = ..., trigger: _Optional[str] = ..., reasoning: _Optional[str] = ..., risk_level: _Optional[str] = ..., indicators: _Optional[_Union[MarketIndicators, _Mapping]] = ..., as_of: _Optional[str] = ..., model_version: _Optional[str] = ..., override: _Optional[bool] = ..., served_from: _Optional[str] = ...) -> None: ...

class GetRegimeHistoryRequest(_message.Message):
    __slots__ = ("time_range",)
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    time_range: _common_pb2.TimeRange
    def __init__(self, time_range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ...) -> None: ...

class GetRegimeHistoryResponse(_message.Message):
    __slots__ = ("regimes",)
    REGIMES_FIELD_NUMBER: _ClassVar[int]
    regimes: _containers.RepeatedCompositeFieldContainer[GetCurrentRegimeResponse]
    def __init__(self, regimes: _Optional[_Iterable[_Union[GetCurrentRegimeResponse, _Mapping]]] = ...) -> None: ...

class SaveRegimeRequest(_message.Message):
    __slots__ = ("regime", "confidence", "trigger", "timestamp", "reasoning", "risk_level")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    regime: str
    confidence: float
    trigger: str
    timestamp: str
    reasoning: str
    risk_level: str
    def __init__(self, regime: _Optional[str] = ..., confidence: _Optional[float] = ..., trigger: _Optional[str] = ..., timestamp: _Optional[str] = ..., reasoning: _Optional[str] = ..., risk_level: _Optional[str] = ...) -> None: ...

class SaveRegimeResponse(_message.Message):
    __slots__ = ("success", "regime")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    success: bool
    regime: GetCurrentRegimeResponse
    def __init__(self, success: _Optional[bool] = ..., regime: _Optional[_Union[GetCurrentRegimeResponse, _Mapping]] = ...) -> None: ...
