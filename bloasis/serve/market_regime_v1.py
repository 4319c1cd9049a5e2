"""bloasis.market_regime.MarketRegimeService (v1, the original contract) over the same reads
as v2: GetCurrentRegime (answer cache, then `RegimeReads`), GetRegimeHistory (v2's history
query; no paging in v1: every row of the range, at most BLOASIS_HISTORY_MAX_DAYS days), and
SaveRegime, an operator override of the current regime (write scope):

- stored under its own model version (`<served version>+override`) with the trigger given, for
  the session of the latest computed regime; a second SaveRegime for that session replaces it;
- served as current (v1, v2, WatchRegime, Redis `market:regime:current`) until the pipeline
  computes a later session, and marked: v1 `override`, v2 `MarketRegime.override`, the
  model version, and a reasoning starting "Operator override";
- published: a RegimeChangeEvent (and a crisis alert) through the outbox when the label
  changes from what was served, and a NOTIFY so every server's snapshot switches at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import grpc

from bloasis import __version__
from bloasis.app.steps import relay_now
from bloasis.config import Settings
from bloasis.pb.v1 import market_regime_pb2 as mr1
from bloasis.publish.cache import write_current_regime
from bloasis.publish.events import regime_events
from bloasis.regime.types import REGIMES, RISK_LEVELS, TRIGGERS, RegimeResult
from bloasis.serve.answer_cache import Answer, Policy
from bloasis.serve.auth import current_principal
from bloasis.serve.market_regime_v2 import MarketRegimeServicer as V2
from bloasis.serve.market_regime_v2 import (
    current_regime_policy,
    current_regime_tag,
    parse_history_request,
)
from bloasis.serve.v1_wire import regime_v1
from bloasis.serve.validation import RequestError, check_user_id, invalid, show
from bloasis.store import outbox, runs
from bloasis.store.regimes import latest_regime, override_version, save_override

log = logging.getLogger(__name__)

SERVICE: Final = mr1.DESCRIPTOR.services_by_name["MarketRegimeService"]
MODEL_VERSION_MAX_LEN: Final = 64  # regimes.model_version is VARCHAR(64)
FUTURE_SLACK: Final = timedelta(minutes=5)
REASONING_MAX_LEN: Final = 2000
_DEFAULT_RISK: Final = {"crisis": "high", "bear": "high", "sideways": "medium"}


def _parse_timestamp(raw: str) -> datetime | None:
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise invalid(
            f"timestamp must be ISO 8601 (e.g. 2025-01-26T14:30:00Z), got {show(raw)}"
        ) from None
    if dt.tzinfo is None:
        raise invalid(f"timestamp needs a time zone (e.g. a trailing Z), got {show(raw)}")
    return dt.astimezone(UTC)


class MarketRegimeServicer:
    def __init__(self, v2: V2, settings: Settings) -> None:
        self.v2 = v2
        self.reads = v2.reads
        self.settings = settings
        self._relays: set[asyncio.Task[None]] = set()

    # --- GetCurrentRegime --------------------------------------------------------------------

    def answer_tag_GetCurrentRegime(self, request: mr1.GetCurrentRegimeRequest) -> str | None:
        return current_regime_tag(request.user_id, request.force_refresh)

    def answer_policy_GetCurrentRegime(self) -> Policy:
        return current_regime_policy(self.reads.snapshot, lambda: b"")

    async def GetCurrentRegime(self, request: mr1.GetCurrentRegimeRequest, context: Any) -> Answer:
        check_user_id(request.user_id)
        value, source = await self.reads.current(context, force_refresh=request.force_refresh)
        if value is None:
            raise self.reads.not_found()
        return Answer(regime_v1(value, source).SerializeToString())

    # --- GetRegimeHistory --------------------------------------------------------------------

    async def GetRegimeHistory(
        self, request: mr1.GetRegimeHistoryRequest, context: Any
    ) -> mr1.GetRegimeHistoryResponse:
        tr = request.time_range
        # One page holding the whole range: a range is at most history_max_days long, so at
        # most that many sessions.
        q = parse_history_request(
            tr.start_date,
            tr.end_date,
            max_days=self.v2.history_max_days,
            page_cap=self.v2.history_max_days + 1,
            prefix="time_range.",
        )
        rows, _ = await self.v2.history_page(q, context)
        return mr1.GetRegimeHistoryResponse(regimes=[regime_v1(r) for r in rows])

    # --- SaveRegime --------------------------------------------------------------------------

    def _override(self, request: mr1.SaveRegimeRequest, now: datetime) -> RegimeResult:
        """Everything checked before the store (the session comes from the store later)."""
        if request.regime not in REGIMES:
            raise invalid(f"regime must be one of {', '.join(REGIMES)}, got {show(request.regime)}")
        c = request.confidence
        if math.isnan(c) or not 0.0 <= c <= 1.0:
            raise invalid(f"confidence must be in [0, 1], got {c}")
        trigger = request.trigger or "manual"
        if trigger not in TRIGGERS:
            raise invalid(f"trigger must be one of {', '.join(TRIGGERS)}, got {show(trigger)}")
        risk = request.risk_level or _DEFAULT_RISK.get(request.regime, "low")
        if risk not in RISK_LEVELS:
            raise invalid(f"risk_level must be one of {', '.join(RISK_LEVELS)}, got {show(risk)}")
        at = _parse_timestamp(request.timestamp) or now
        if at > now + FUTURE_SLACK:
            raise invalid(f"timestamp {request.timestamp} is in the future")
        if len(request.reasoning) > REASONING_MAX_LEN or not request.reasoning.isprintable():
            raise invalid(f"reasoning must be printable text of at most {REASONING_MAX_LEN} chars")
        version = override_version(self.reads.model_version)
        if len(version) > MODEL_VERSION_MAX_LEN:
            raise invalid(f"the served model version is too long to store an override: {version}")
        why = request.reasoning or "no reason given"
        return RegimeResult(
            as_of=now.date(),  # replaced by the computed session in _save
            regime=request.regime,
            confidence=c,
            risk_level=risk,
            trigger=trigger,
            reasoning=f"Operator override (SaveRegime, trigger {trigger}): {why}",
            indicators={},
            model_version=version,
            run_id=uuid.uuid4(),
            computed_at=at,
        )

    def _save(self, draft: RegimeResult) -> RegimeResult:
        """Blocking: store the override for the latest computed session, queue its events and
        notify every server, in one transaction."""
        with self.reads.store.engine.begin() as conn:
            computed = latest_regime(conn, self.reads.model_version)
            if computed is None:
                raise RequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no computed regime to override yet; run the pipeline first",
                )
            # The computed session's indicators: the market facts stay what they were.
            result = dataclasses.replace(
                draft, as_of=computed.as_of, indicators=computed.indicators
            )
            previous = self.reads.snapshot.value or computed
            # An override is a run of its own in pipeline_runs: who changed what, and when.
            runs.start_run(
                conn,
                run_id=result.run_id,
                flow="save-regime",
                trigger=result.trigger,
                as_of=result.as_of,
                parameters={"regime": result.regime, "confidence": result.confidence},
                data_source="operator",
                data_snapshot_hash="",
                code_version=__version__,
                model_version=result.model_version,
            )
            save_override(conn, result)
            runs.finish_run(
                conn, result.run_id, status="completed", result={"regime": result.regime}
            )
            outbox.enqueue(conn, regime_events(previous, result, override=True))
            outbox.notify_results(conn, "regime override")
        return result

    async def SaveRegime(
        self, request: mr1.SaveRegimeRequest, context: Any
    ) -> mr1.SaveRegimeResponse:
        principal = current_principal()
        if principal is not None and principal.users is not None:
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {principal.name!r} is bound to users: SaveRegime changes the regime "
                "every user is served and needs a token that is not",
            )
        draft = self._override(request, datetime.now(UTC))
        result = await self.reads.store.call(
            lambda: self._save(draft), context, "storing the regime override"
        )
        log.warning(
            "regime override stored: %s (confidence %.2f, trigger %s) for %s",
            result.regime,
            result.confidence,
            result.trigger,
            result.as_of.isoformat(),
        )
        if self.settings.redis_url:  # best effort: the snapshot and PostgreSQL have it already
            ttl = self.settings.regime_ttl_seconds

            def _write(client: Any) -> None:
                write_current_regime(client, result, ttl)

            await self.reads.store.redis_call(_write, "writing the regime override")
        self.reads.refresher.poke()
        if self.settings.kafka_bootstrap_servers:
            # Published now rather than at the next relay (the outbox-relay flow, every 10 min,
            # is the safety net when this attempt fails): in the background, the answer does
            # not wait for the broker.
            task = asyncio.create_task(self._relay(), name="save-regime-relay")
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
        return mr1.SaveRegimeResponse(success=True, regime=regime_v1(result, "postgres"))

    async def drain(self) -> None:
        """Wait for the relays started by SaveRegime (the server is stopping)."""
        if self._relays:
            await asyncio.wait(set(self._relays))

    async def _relay(self) -> None:
        try:
            stats = await asyncio.to_thread(asyncio.run, relay_now(self.settings))
            log.info("regime override relayed: %d events published", stats.published)
        except Exception as exc:  # the outbox keeps the events for the next relay
            log.warning("regime override stays in the outbox: %s", exc)
