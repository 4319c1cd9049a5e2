from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSectorAnalysisRequest(_message.Message):
    __slots__ = ("regime", "force_refresh")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    regime: str
    force_refresh: bool
    def __init__(self, regime: _Optional[str] = ..., force_refresh: _Optional[bool] = ...) -> None: ...

class GetSectorAnalysisResponse(_message.Message):
    __slots__ = ("sectors", "regime", "cached_at")
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    CACHED_AT_FIELD_NUMBER: _ClassVar[int]
    sectors: _containers.RepeatedCompositeFieldContainer[SectorScore]
    regime: str
    cached_at: str
    def __init__(self, sectors: _Optional[_Iterable[_Union[SectorScore, _Mapping]]] = ..., regime: _Optional[str] = ..., cached_at: _Optional[str] = ...) -> None: ...

class SectorScore(_message.Message):
    __slots__ = ("sector", "score", "rationale", "selected")
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    sector: str
    score: float
    rationale: str
    selected: bool
    def __init__(self, sector: _Optional[str] = ..., score: _Optional[float] = ..., rationale: _Optional[str] = ..., selected: _Optional[bool] = ...) -> None: ...

class GetThematicAnalysisRequest(_message.Message):
    __slots__ = ("sectors", "regime", "force_refresh")
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    sectors: _containers.RepeatedScalarFieldContainer[str]
    regime: str
    force_refresh: bool
    def __init__(self, sectors: _Optional[_Iterable[str]] = ..., regime: _Optional[str] = ..., force_refresh: _Optional[bool] = ...) -> None: ...

class GetThematicAnalysisResponse(_message.Message):
    __slots__ = ("themes", "cached_at")
    THEMES_FIELD_NUMBER: _ClassVar[int]
    CACHED_AT_FIELD_NUMBER: _ClassVar[int]
    themes: _containers.RepeatedCompositeFieldContainer[ThemeScore]
    cached_at: str
    def __init__(self, themes: _Optional[_Iterable[_Union[ThemeScore, _Mapping]]] = ..., cached_at: _Optional[str] = ...) -> None: ...

class ThemeScore(_message.Message):
    __slots__ = ("theme", "sector", "score", "rationale", "representative_symbols")
    THEME_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIVE_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    theme: str
    sector: str
    score: float
    rationale: str
    representative_symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, theme: _Optional[str] = ..., sector: _Optional[str] = ..., score: _Optional[float] = ..., rationale: _Optional[str] = ..., representative_symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCandidateSymbolsRequest(_message.Message):
    __slots__ = ("regime", "max_candidates", "force_refresh")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FORCE_REFRESH_FIELD_NUMBER: _ClassVar[int]
    regime: str
    max_candidates: int
    force_refresh: bool
    def __init__(self, regime: _Optional[str] = ..., max_candidates: _Optional[int] = ..., force_refresh: _Optional[bool] = ...) -> None: ...

class GetCandidateSymbolsResponse(_message.Message):
    __slots__ = ("candidates", "selected_sectors", "top_themes", "regime")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SELECTED_SECTORS_FIELD_NUMBER: _ClassVar[int]
    TOP_THEMES_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateSymbol]
    selected_sectors: _containers.RepeatedScalarFieldContainer[str]
    top_themes: _containers.RepeatedScalarFieldContainer[str]
    regime: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[CandidateSymbol, _Mapping]]] = ..., selected_sectors: _Optional[_Iterable[str]] = ..., top_themes: _Optional[_Iterable[str]] = ..., regime: _Optional[str] = ...) -> None: ...

class CandidateSymbol(_message.Message):
    __slots__ = ("symbol", "sector", "theme", "preliminary_score")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    THEME_FIELD_NUMBER: _ClassVar[int]
    PRELIMINARY_SCORE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    sector: str
    theme: str
    preliminary_score: float
    def __init__(self, symbol: _Optional[str] = ..., sector: _Optional[str] = ..., theme: _Optional[str] = ..., preliminary_score: _Optional[float] = ...) -> None: ...
