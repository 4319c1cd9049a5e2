from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class UserProfile(_message.Message):
    __slots__ = ("user_id", "profile_type", "risk_tolerance")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RISK_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    profile_type: str
    risk_tolerance: float
    def __init__(self, user_id: _Optional[str] = ..., profile_type: _Optional[str] = ..., risk_tolerance: _Optional[float] = ...) -> None: ...

class Symbol(_message.Message):
    __slots__ = ("ticker", "name", "sector")
    TICKER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    ticker: str
    name: str
    sector: str
    def __init__(self, ticker: _Optional[str] = ..., name: _Optional[str] = ..., sector: _Optional[str] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_date", "end_date")
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    start_date: str
    end_date: str
    def __init__(self, start_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class Money(_message.Message):
    __slots__ = ("amount", "currency")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount: str
    currency: str
    def __init__(self, amount: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...
