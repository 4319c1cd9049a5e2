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

class GetCurrentRegimeRequest(_message.Message):
    __slots__ = ("force_refresh", "user_id")
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    force_refresh: bool
    user_id: str
    def __init__(self, force_refresh: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetCurrentRegimeResponse(_message.Message):
    __slots__ = ("regime", "served_from", "served_at")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_FIELD_NUMBER: _ClassVar[int]
    regime: _common_pb2.MarketRegime
    served_from: str
    served_at: _timestamp_pb2.Timestamp
    def __init__(self, regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., served_from: _Optional[str] = ..., served_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRegimeHistoryRequest(_message.Message):
    __slots__ = ("start_date", "end_date", "page_size", "page_token")
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_date: str
    end_date: str
    page_size: int
    page_token: str
    def __init__(self, start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRegimeHistoryResponse(_message.Message):
    __slots__ = ("regimes", "next_page_token", "served_at")
    REGIMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_FIELD_NUMBER: _ClassVar[int]
    regimes: _containers.RepeatedCompositeFieldContainer[_common_pb2.MarketRegime]
    next_page_token: str
    served_at: _timestamp_pb2.Timestamp
    def __init__(self, regimes: _Optional[_Iterable[_Union[_common_pb2.MarketRegime, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., served_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchRegimeRequest(_message.Message):
    __slots__ = ("skip_current",)
    SKIP_CURRENT_FIELD_NUMBER: _ClassVar[int]
    skip_current: bool
    def __init__(self, skip_current: _Optional[bool] = ...) -> None: ...

class RegimeUpdate(_message.Message):
    __slots__ = ("regime", "previous_regime")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REGIME_FIELD_NUMBER: _ClassVar[int]
    regime: _common_pb2.MarketRegime
    previous_regime: str
    def __init__(self, regime: _Optional[_Union[_common_pb2.MarketRegime, _Mapping]] = ..., previous_regime: _Optional[str] = ...) -> None: ...
