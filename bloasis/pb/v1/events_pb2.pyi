from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
    __slots__ = ("event_id", "timestamp", "previous_regime", "new_regime", "confidence", "reasoning", "priority", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REGIME_FIELD_NUMBER: _ClassVar[int]
    NEW_REGIME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    timestamp: str
    previous_regime: str
    new_regime: str
    confidence: float
    reasoning: str
    priority: EventPriority
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., previous_regime: _Optional[str] = ..., new_regime: _Optional[str] = ..., confidence: _Optional[float] = ..., reasoning: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MarketAlertEvent(_message.Message):
    __slots__ = ("event_id", "timestamp", "alert_type", "severity", "message", "priority", "indicators")
    class IndicatorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ALERT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    timestamp: str
    alert_type: str
    severity: str
    message: str
    priority: EventPriority
    indicators: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., alert_type: _Optional[str] = ..., severity: _Optional[str] = ..., message: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., indicators: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StrategySignalEvent(_message.Message):
    __slots__ = ("event_id", "timestamp", "strategy_id", "signal_type", "symbol", "action", "confidence", "priority", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    timestamp: str
    strategy_id: str
    signal_type: str
    symbol: str
    action: str
    confidence: float
    priority: EventPriority
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., strategy_id: _Optional[str] = ..., signal_type: _Optional[str] = ..., symbol: _Optional[str] = ..., action: _Optional[str] = ..., confidence: _Optional[float] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RiskAlertEvent(_message.Message):
    __slots__ = ("event_id", "timestamp", "risk_type", "severity", "message", "affected_portfolio", "priority", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RISK_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AFFECTED_PORTFOLIO_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    timestamp: str
    risk_type: str
    severity: str
    message: str
    affected_portfolio: str
    priority: EventPriority
    metrics: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., risk_type: _Optional[str] = ..., severity: _Optional[str] = ..., message: _Optional[str] = ..., affected_portfolio: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., metrics: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TradingControlEvent(_message.Message):
    __slots__ = ("event_id", "timestamp", "user_id", "action", "stop_mode", "priority", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STOP_MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    timestamp: str
    user_id: str
    action: str
    stop_mode: str
    priority: EventPriority
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., user_id: _Optional[str] = ..., action: _Optional[str] = ..., stop_mode: _Optional[str] = ..., priority: _Optional[_Union[EventPriority, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
