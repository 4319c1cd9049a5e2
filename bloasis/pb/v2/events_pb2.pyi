import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from bloasis.pb.v2 import common_pb2 as _common_pb2
from bloasis.pb.v2 import strategy_pb2 as _strategy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_PRIORITY_UNSPECIFIED: _ClassVar[EventPriority]
    EVENT_PRIORITY_LOW: _ClassVar[EventPriority]
    EVENT_PRIORITY_MEDIUM: _ClassVar[EventPriority]
    EVENT_PRIORITY_HIGH: _ClassVar[EventPriority]
    EVENT_PRIORITY_CRITICAL: _ClassVar[EventPriority]
EVENT_PRIORITY_UNSPECIFIED: EventPriority
EVENT_PRIORITY_LOW: EventPriority
EVENT_PRIORITY_MEDIUM: EventPriority
EVENT_PRIORITY_HIGH: EventPriority
EVENT_PRIORITY_CRITICAL: EventPriority

class RegimeChangeEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "occurred_at", "previous_regime", "new_regime", "regime", "historical", "timestamp", "confidence", "reasoning", "priority", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REGIME_FIELD_NUMBER: _ClassVar[int]
    NEW_REGIME_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    occurred_at: _timestamp_pb2.Timestamp
    previous_regime: str
    new_regime: str
    regime: _common_pb2.MarketRegime
    historical: bool
    timestamp: str
    confidence: float
    reasoning: str
    priority: EventPriority
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., previous_regime: _Optional[str] = ..., new_regime: _Optional[str] = ..., regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., historical: _Optional[bool] = ..., timestamp: _Optional[str] = ..., confidence: _Optional[float] = ..., reasoning: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MarketAlertEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "occurred_at", "severity", "alert_type", "message", "as_of", "regime", "age_seconds", "sla_seconds", "model_version", "timestamp", "priority", "indicators")
    class IndicatorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    ALERT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SLA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    occurred_at: _timestamp_pb2.Timestamp
    severity: str
    alert_type: str
    message: str
    as_of: str
    regime: _common_pb2.MarketRegime
    age_seconds: float
    sla_seconds: int
    model_version: str
    timestamp: str
    priority: EventPriority
    indicators: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[str] = ..., alert_type: _Optional[str] = ..., message: _Optional[str] = ..., as_of: _Optional[str] = ..., regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., age_seconds: _Optional[float] = ..., sla_seconds: _Optional[int] = ..., model_version: _Optional[str] = ..., timestamp: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., indicators: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StrategySignalEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "occurred_at", "strategy_id", "as_of", "risk_profile", "user_id", "regime", "risk_level", "signals", "cash_weight", "profile_strategy_id", "historical", "timestamp", "signal_type", "symbol", "action", "confidence", "priority", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    RISK_PROFILE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    CASH_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    occurred_at: _timestamp_pb2.Timestamp
    strategy_id: str
    as_of: str
    risk_profile: str
    user_id: str
    regime: str
    risk_level: str
    signals: _containers.RepeatedCompositeFieldContainer[_strategy_pb2.Signal]
    cash_weight: str
    profile_strategy_id: str
    historical: bool
    timestamp: str
    signal_type: str
    symbol: str
    action: str
    confidence: float
    priority: EventPriority
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., strategy_id: _Optional[str] = ..., as_of: _Optional[str] = ..., risk_profile: _Optional[str] = ..., user_id: _Optional[str] = ..., regime: _Optional[str] = ..., risk_level: _Optional[str] = ..., signals: _Optional[_Iterable[_Union[_strategy_pb2.Signal, _Mapping]]] = ..., cash_weight: _Optional[str] = ..., profile_strategy_id: _Optional[str] = ..., historical: _Optional[bool] = ..., timestamp: _Optional[str] = ..., signal_type: _Optional[str] = ..., symbol: _Optional[str] = ..., action: _Optional[str] = ..., confidence: _Optional[float] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...
