"""A small blocking client for the gRPC server (used by the CLI) and human-readable formatting.

Results are proto3 JSON-like dicts (field names as in the .proto, Timestamps as RFC 3339
strings, decimals as strings): of `bloasis.common.v2.MarketRegime` (optional indicators absent when
unknown), plus `served_from`/`served_at` for `get_regime` and `previous_regime` for `watch`; of
`bloasis.strategy.v2.StrategyResponse` (`strategy`, `regime`, `served_from`) for `get_strategy`;
of `bloasis.classification.v2.SectorAnalysis` for `get_sectors`; of
`bloasis.strategy.v2.UserPreferences` for the preferences calls. Any gRPC failure raises
`ClientError` carrying the status code name and the server's details.

Every call takes `auth` (`ClientAuth.from_settings(settings)`: TLS roots from
`BLOASIS_GRPC_TLS_CA`, bearer token from `BLOASIS_GRPC_TOKEN`); None is plaintext, no token.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from bloasis.config import Settings
from bloasis.pb.v2 import classification_pb2 as cl_pb
from bloasis.pb.v2 import classification_pb2_grpc as cl_grpc
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc
from bloasis.pb.v2 import strategy_pb2 as st_pb
from bloasis.pb.v2 import strategy_pb2_grpc as st_grpc

R = TypeVar("R")

# Mirrors the server's limits: it may send history pages up to 64 MB.
CHANNEL_OPTIONS: Final = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A watch may see no data for hours: keep probing the connection anyway.
    ("grpc.http2.max_pings_without_data", 0),
]
# Summarise regime spells under the daily lines once a history is at least this long.
SPELL_SUMMARY_MIN_ROWS: Final = 30


class ClientError(Exception):
    """A failed call: `code` is the gRPC status name (e.g. "UNAVAILABLE"), `details` the reason."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return ClientError(code.name if code is not None else "UNKNOWN", details or "")


@dataclass(frozen=True)
class ClientAuth:
    """How to reach a secured server: TLS roots (None: plaintext) and a bearer token."""

    root_certificates: bytes | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientAuth:
        ca = settings.grpc_tls_ca
        return cls(Path(ca).read_bytes() if ca else None, settings.value_of("grpc_token"))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata carrying the token (also for grpc.aio callers)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _AddMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the token metadata to every call of a channel (TLS or plaintext alike)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, d: Any) -> _CallDetails:
        return _CallDetails(
            d.method,
            d.timeout,
            (*(d.metadata or ()), *self._metadata),
            d.credentials,
            d.wait_for_ready,
            d.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def open_channel(address: str, auth: ClientAuth | None = None) -> grpc.Channel:
    """A blocking channel to `address`: TLS when `auth` has roots, the token on every call."""
    if auth is not None and auth.root_certificates is not None:
        creds = grpc.ssl_channel_credentials(auth.root_certificates)
        channel = grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    if auth is not None and auth.token:
        return grpc.intercept_channel(channel, _AddMetadata(auth.metadata))
    return channel


@contextmanager
def _stub(
    address: str,
    stub_class: Callable[[grpc.Channel], Any] | None = None,
    auth: ClientAuth | None = None,
) -> Iterator[Any]:
    with open_channel(address, auth) as channel:
        yield (stub_class or mr_grpc.MarketRegimeServiceStub)(channel)


def _unary(
    address: str,
    stub_class: Callable[[grpc.Channel], Any],
    call: Callable[[Any], R],
    auth: ClientAuth | None,
) -> R:
    """One unary call on a fresh channel; gRPC failures become ClientError."""
    try:
        with _stub(address, stub_class, auth) as stub:
            return call(stub)
    except grpc.RpcError as exc:
        raise _error(exc) from None


def message_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def get_regime(
    address: str,
    *,
    timeout: float = 5.0,
    force_refresh: bool = False,
    user_id: str = "",
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """The current regime, with `served_from` (snapshot|redis|postgres) and `served_at`."""
    req = mr_pb.GetCurrentRegimeRequest(force_refresh=force_refresh, user_id=user_id)
    try:
        with _stub(address, auth=auth) as stub:
            resp = stub.GetCurrentRegime(req, timeout=timeout)
    except grpc.RpcError as exc:
        raise _error(exc) from None
    out = message_dict(resp.regime)
    out["served_from"] = resp.served_from
    out["served_at"] = message_dict(resp)["served_at"]
    return out


def get_history(
    address: str,
    start: date | None = None,
    end: date | None = None,
    *,
    timeout: float = 30.0,
    page_size: int = 0,
    auth: ClientAuth | None = None,
) -> list[dict[str, Any]]:
    """Every stored regime in [start, end], oldest first, following all pages.

    `timeout` bounds the whole walk, not each page. None dates use the server defaults
    (end: the latest as-of; start: end minus 365 days).
    """
    deadline = time.monotonic() + timeout
    req = mr_pb.GetRegimeHistoryRequest(
        start_date=start.isoformat() if start else "",
        end_date=end.isoformat() if end else "",
        page_size=page_size,
    )
    out: list[dict[str, Any]] = []
    try:
        with _stub(address, auth=auth) as stub:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError("DEADLINE_EXCEEDED", f"history not complete in {timeout}s")
                resp = stub.GetRegimeHistory(req, timeout=remaining)
                out.extend(message_dict(r) for r in resp.regimes)
                if not resp.next_page_token:
                    return out
                req.page_token = resp.next_page_token
    except grpc.RpcError as exc:
        raise _error(exc) from None


def watch(
    address: str, *, skip_current: bool = False, auth: ClientAuth | None = None
) -> Generator[dict[str, Any], None, None]:
    """The current regime, then one dict (with `previous_regime`) per change, until closed.

    Closing the generator (or breaking out of the loop) cancels the stream.
    """
    with _stub(address, auth=auth) as stub:
        call = stub.WatchRegime(mr_pb.WatchRegimeRequest(skip_current=skip_current))
        try:
            for update in call:
                out = message_dict(update.regime)
                out["previous_regime"] = update.previous_regime
                yield out
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            call.cancel()


def _date_text(as_of: date | str | None) -> str:
    return as_of.isoformat() if isinstance(as_of, date) else (as_of or "")


def get_strategy(
    address: str,
    *,
    user_id: str | None = None,
    risk_profile: str | None = None,
    as_of: date | str | None = None,
    symbols: Iterable[str] = (),
    timeout: float = 5.0,
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """A user's (expanded) or a risk profile's strategy: {strategy, regime, served_from}.

    `as_of` None: the latest stored; `symbols` restricts picks and signals."""
    req = st_pb.GetStrategyRequest(
        user_id=user_id or "",
        risk_profile=risk_profile or "",
        as_of=_date_text(as_of),
        symbols=list(symbols),
    )
    resp = _unary(
        address, st_grpc.StrategyServiceStub, lambda s: s.GetStrategy(req, timeout=timeout), auth
    )
    return message_dict(resp)


def get_sectors(
    address: str,
    as_of: date | str | None = None,
    *,
    timeout: float = 5.0,
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """The sector analysis of `as_of` (None: the latest), with `served_from`."""
    req = cl_pb.GetSectorAnalysisRequest(as_of=_date_text(as_of))
    resp = _unary(
        address,
        cl_grpc.ClassificationServiceStub,
        lambda s: s.GetSectorAnalysis(req, timeout=timeout),
        auth,
    )
    return message_dict(resp)


def get_candidates(
    address: str,
    as_of: date | str | None = None,
    *,
    sectors: Iterable[str] = (),
    timeout: float = 5.0,
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """The candidate symbols (with sectors) of the sector analysis, optionally of some sectors."""
    req = cl_pb.GetCandidateSymbolsRequest(as_of=_date_text(as_of), sectors=list(sectors))
    resp = _unary(
        address,
        cl_grpc.ClassificationServiceStub,
        lambda s: s.GetCandidateSymbols(req, timeout=timeout),
        auth,
    )
    return message_dict(resp)


def get_preferences(
    address: str, user_id: str, *, timeout: float = 5.0, auth: ClientAuth | None = None
) -> dict[str, Any]:
    req = st_pb.GetPreferencesRequest(user_id=user_id)
    resp = _unary(
        address,
        st_grpc.StrategyServiceStub,
        lambda s: s.GetPreferences(req, timeout=timeout),
        auth,
    )
    return message_dict(resp)


def update_preferences(
    address: str,
    user_id: str,
    *,
    risk_profile: str = "",
    preferred_sectors: Iterable[str] = (),
    excluded_sectors: Iterable[str] = (),
    max_single_position: Decimal | str | None = None,
    timeout: float = 5.0,
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """Create or replace a user's preferences (empty risk_profile / max_single_position: the
    defaults); returns them as stored. The user's strategy is recomputed by the next run."""
    prefs = st_pb.UserPreferences(
        user_id=user_id,
        risk_profile=risk_profile,
        preferred_sectors=list(preferred_sectors),
        excluded_sectors=list(excluded_sectors),
        max_single_position="" if max_single_position is None else str(max_single_position),
    )
    req = st_pb.UpdatePreferencesRequest(preferences=prefs)
    resp = _unary(
        address,
        st_grpc.StrategyServiceStub,
        lambda s: s.UpdatePreferences(req, timeout=timeout),
        auth,
    )
    return message_dict(resp)


# --------------------------------------------------------------------------------------------
# Formatting for people.
# --------------------------------------------------------------------------------------------


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(float(value))


def _pct(value: Any) -> str:
    return _num(value, "{:+.2%}")


def format_regime(d: dict[str, Any]) -> str:
    """Multi-line: label, confidence, risk, as-of, reasoning, indicators."""
    ind: dict[str, Any] = d.get("indicators") or {}
    vix = _num(ind.get("vix")) + (" (realised-volatility proxy)" if ind.get("vix_is_proxy") else "")
    lines = [
        f"Regime      {d.get('regime', '?')}",
        f"Confidence  {_num(d.get('confidence', 0.0))}",
        f"Risk        {d.get('risk_level', '?')}",
        f"As of       {d.get('as_of', '?')}",
        f"Computed    {d.get('computed_at', '?')} (model {d.get('model_version', '?')}, "
        f"trigger {d.get('trigger', '?')}, run {d.get('run_id', '?')})",
    ]
    if d.get("served_from"):
        lines.append(f"Served from {d['served_from']} at {d.get('served_at', '?')}")
    if d.get("previous_regime"):
        lines.append(f"Previous    {d['previous_regime']}")
    lines += [
        f"Reasoning   {d.get('reasoning', '')}",
        "Indicators",
        f"  VIX                {vix}",
        f"  S&P 500            {_num(ind.get('sp500_close'))} "
        f"(trend {ind.get('sp500_trend', '?')})",
        f"  Yield curve 10-2Y  {_num(ind.get('yield_curve'), '{:+.2f} pp')} "
        f"({ind.get('yield_curve_state', 'unknown')})",
        f"  Credit spread      {_num(ind.get('credit_spread'), '{:.2f} pp')} "
        f"({ind.get('credit_spread_state', 'unknown')})",
        f"  Drawdown           {_pct(ind.get('drawdown'))}",
        f"  vs 200-day avg     {_pct(ind.get('sma200_gap'))} "
        f"(slope {_pct(ind.get('sma200_slope'))})",
        f"  Daily return       {_pct(ind.get('daily_return'))}",
    ]
    return "\n".join(lines)


def regime_spells(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """Runs of consecutive rows with the same label: (first as-of, last as-of, label, rows)."""
    spells: list[tuple[str, str, str, int]] = []
    for r in rows:
        as_of, label = str(r.get("as_of", "?")), str(r.get("regime", "?"))
        if spells and spells[-1][2] == label:
            first, _, _, n = spells[-1]
            spells[-1] = (first, as_of, label, n + 1)
        else:
            spells.append((as_of, as_of, label, 1))
    return spells


def format_history(rows: list[dict[str, Any]], *, summary: bool | None = None) -> str:
    """One line per day (date label confidence risk); long histories also get regime spells.

    `summary=None` adds the spells from SPELL_SUMMARY_MIN_ROWS rows on; True/False forces it.
    """
    if not rows:
        return "no regimes stored in this range"
    lines = [
        f"{r.get('as_of', '?')}  {r.get('regime', '?'):<9} "
        f"{_num(r.get('confidence', 0.0))}  {r.get('risk_level', '?')}"
        for r in rows
    ]
    if summary is None:
        summary = len(rows) >= SPELL_SUMMARY_MIN_ROWS
    if summary:
        spells = regime_spells(rows)
        lines += ["", f"{len(rows)} days, {len(spells)} regime spells:"]
        lines += [
            f"{first}..{last} {label} ({n} {'day' if n == 1 else 'days'})"
            for first, last, label, n in spells
        ]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _tiers(tiers: list[dict[str, Any]]) -> str:
    return " ".join(f"{t.get('level', '?')}x{t.get('size_pct', '?')}" for t in tiers) or "-"


def format_strategy(d: dict[str, Any]) -> str:
    """Who, as-of, regime, then one line per signal (decimals exactly as served), and cash."""
    s: dict[str, Any] = d.get("strategy") or {}
    r: dict[str, Any] = d.get("regime") or {}
    who = (
        f"user {s['user_id']} (profile {s.get('risk_profile', '?')})"
        if s.get("user_id")
        else f"profile {s.get('risk_profile', '?')}"
    )
    regime = s.get("regime") or r.get("regime", "?")
    lines = [
        f"Strategy    {who}",
        f"Id          {s.get('strategy_id', '?')}",
        f"As of       {s.get('as_of', '?')}",
        f"Computed    {s.get('computed_at', '?')} (model {s.get('model_version', '?')}, "
        f"run {s.get('run_id', '?')})",
        f"Regime      {regime} (risk {s.get('risk_level') or r.get('risk_level', '?')}"
        + (f", confidence {_num(r['confidence'])})" if "confidence" in r else ")"),
    ]
    if s.get("profile_strategy_id"):
        lines.append(f"Derived     from {s['profile_strategy_id']}")
    if d.get("served_from"):
        lines.append(f"Served from {d['served_from']}")
    signals: list[dict[str, Any]] = s.get("signals") or []
    lines.append("")
    if signals:
        header = ("SYMBOL", "SECTOR", "ACTION", "WEIGHT", "ENTRY", "STOP", "TIERS", "TRAILING")
        rows = [
            (
                str(g.get("symbol", "?")),
                str(g.get("sector", "")),
                str(g.get("action", "?")),
                str(g.get("weight", "")),
                str(g.get("entry_price", "")),
                str(g.get("stop_loss", "")),
                _tiers(g.get("profit_tiers") or []),
                str(g.get("trailing_stop_pct", "")),
            )
            for g in signals
        ]
        lines += _table(header, rows)
    else:
        lines.append("no signals")
    lines += ["", f"Cash        {s.get('cash_weight', '?')}"]
    return "\n".join(lines)


def format_sectors(d: dict[str, Any]) -> str:
    """As-of and regime, the 11 sectors ranked (selected ones starred), then the candidates."""
    lines = [
        f"Sectors     as of {d.get('as_of', '?')}, regime {d.get('regime', '?')}",
        f"Computed    {d.get('computed_at', '?')} (model {d.get('model_version', '?')}, "
        f"run {d.get('run_id', '?')})",
    ]
    if d.get("served_from"):
        lines.append(f"Served from {d['served_from']}")
    lines.append("")
    header = ("RANK", "SECTOR", "SCORE", "TILT", "STRENGTH", "MEMBERS", "SELECTED")
    rows = [
        (
            str(x.get("rank", "?")),
            str(x.get("sector", "?")),
            _num(x.get("score", 0.0), "{:.1f}"),
            _num(x.get("tilt", 0.0), "{:.1f}"),
            _num(x.get("strength", 0.0), "{:.1f}"),
            str(x.get("members", 0)),
            "*" if x.get("selected") else "",
        )
        for x in d.get("sectors") or []
    ]
    lines += _table(header, rows)
    candidates: list[str] = d.get("candidates") or []
    lines += ["", f"Candidates  {', '.join(candidates) if candidates else '-'}"]
    return "\n".join(lines)
