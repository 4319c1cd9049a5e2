"""Errors and request checks for every service and API version: one place, so v1 and v2 answer
bad input the same way and nothing is checked against the store that could be checked here.

Servicer code raises `RequestError`; the RPC wrapper (`bloasis.serve.handlers`) turns it into the
call's gRPC status with these details.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Final

import grpc

from bloasis.strategy.types import GICS_SECTORS, PROFILES

USER_ID_MAX_LEN: Final = 128
MAX_SYMBOLS: Final = 100
MAX_SECTORS: Final = 64
DECIMAL_MAX_LEN: Final = 32
DETAILS_MAX_LEN: Final = 500

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SYMBOL_RE = re.compile(r"[A-Za-z0-9.^-]{1,32}")
# A decimal as people write it: no exponent, NaN or infinity (they would pass Decimal()).
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class RequestError(Exception):
    """Raised by servicer code; the RPC wrapper turns it into a gRPC status with these details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def invalid(details: str) -> RequestError:
    if len(details) > DETAILS_MAX_LEN:  # keep the status short whatever the input size
        details = details[:DETAILS_MAX_LEN] + "…"
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, details)


def not_found(details: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, details)


def show(value: str, limit: int = 40) -> str:
    """A bad value echoed back in an error, truncated so huge inputs do not bloat the status."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_user_id(user_id: str) -> None:
    if len(user_id) > USER_ID_MAX_LEN:
        raise invalid(f"user_id must be at most {USER_ID_MAX_LEN} characters, got {len(user_id)}")
    if not user_id.isprintable():
        raise invalid(
            f"user_id must be printable text (no control characters), got {show(user_id)}"
        )


def require_user_id(user_id: str, field: str = "user_id") -> str:
    if not user_id:
        raise invalid(f"{field} is required")
    check_user_id(user_id)
    return user_id


def parse_date_field(field: str, raw: str) -> date | None:
    """'' -> None (use the default); otherwise strictly YYYY-MM-DD (3.11's fromisoformat is lax)."""
    if raw == "":
        return None
    if not _DATE_RE.fullmatch(raw):
        raise invalid(f"{field} must be a date as YYYY-MM-DD, got {show(raw)}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(f"{field} {show(raw)} is not a valid calendar date") from None


def parse_symbols(raw: Sequence[str]) -> frozenset[str]:
    """Upper-cased symbols to keep (empty: keep all)."""
    if len(raw) > MAX_SYMBOLS:
        raise invalid(f"symbols: at most {MAX_SYMBOLS} symbols per request, got {len(raw)}")
    for s in raw:
        if not _SYMBOL_RE.fullmatch(s):
            raise invalid(
                f"symbols: {show(s)} is not a symbol (1-32 characters of A-Z a-z 0-9 . ^ -)"
            )
    return frozenset(s.upper() for s in raw)


def parse_profile(field: str, raw: str) -> str:
    if raw not in PROFILES:
        raise invalid(f"{field} must be one of {', '.join(PROFILES)}, got {show(raw)}")
    return raw


def parse_sectors(field: str, raw: Sequence[str]) -> tuple[str, ...]:
    if len(raw) > MAX_SECTORS:
        raise invalid(f"{field}: at most {MAX_SECTORS} entries, got {len(raw)}")
    for s in raw:
        if s not in GICS_SECTORS:
            raise invalid(
                f"{field}: {show(s)} is not a GICS sector (one of {', '.join(GICS_SECTORS)})"
            )
    return tuple(raw)


def parse_decimal(field: str, raw: str) -> Decimal:
    if len(raw) > DECIMAL_MAX_LEN or not _DECIMAL_RE.fullmatch(raw):
        raise invalid(f"{field} must be a decimal number such as 0.10, got {show(raw)}")
    try:
        return Decimal(raw)
    except InvalidOperation:  # unreachable after the pattern; kept for safety
        raise invalid(f"{field} must be a decimal number such as 0.10, got {show(raw)}") from None
