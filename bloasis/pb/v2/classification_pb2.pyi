import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSectorAnalysisRequest(_message.Message):
    __slots__ = ("as_of",)
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    as_of: str
    def __init__(self, as_of: _Optional[str] = ...) -> None: ...

class SectorScore(_message.Message):
    __slots__ = ("sector", "score", "tilt", "strength", "members", "rank", "selected")
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TILT_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    sector: str
    score: float
    tilt: float
    strength: float
    members: int
    rank: int
    selected: bool
    def __init__(self, sector: _Optional[str] = ..., score: _Optional[float] = ..., tilt: _Optional[float] = ..., strength: _Optional[float] = ..., members: _Optional[int] = ..., rank: _Optional[int] = ..., selected: _Optional[bool] = ...) -> None: ...

class SectorAnalysis(_message.Message):
    __slots__ = ("as_of", "regime", "sectors", "candidates", "run_id", "model_version", "computed_at", "served_from")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    as_of: str
    regime: str
    sectors: _containers.RepeatedCompositeFieldContainer[SectorScore]
    candidates: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    model_version: str
    computed_at: _timestamp_pb2.Timestamp
    served_from: str
    def __init__(self, as_of: _Optional[str] = ..., regime: _Optional[str] = ..., sectors: _Optional[_Iterable[_Union[SectorScore, _Mapping]]] = ..., candidates: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., model_version: _Optional[str] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., served_from: _Optional[str] = ...) -> None: ...

class GetCandidateSymbolsRequest(_message.Message):
    __slots__ = ("as_of", "sectors")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    as_of: str
    sectors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, as_of: _Optional[str] = ..., sectors: _Optional[_Iterable[str]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("symbol", "sector")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    sector: str
    def __init__(self, symbol: _Optional[str] = ..., sector: _Optional[str] = ...) -> None: ...

class GetCandidateSymbolsResponse(_message.Message):
    __slots__ = ("as_of", "regime", "candidates", "served_from")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SERVED_FROM_FIELD_NUMBER: _ClassVar[int]
    as_of: str
    regime: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    served_from: str
    def __init__(self, as_of: _Optional[str] = ..., regime: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., served_from: _Optional[str] = ...) -> None: ...
