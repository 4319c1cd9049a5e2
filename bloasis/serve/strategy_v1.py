"""bloasis.strategy.StrategyService (v1, the original contract) over the v2 servicer's reads.

- GetStockPicks / GetPersonalizedStrategy: the user's latest strategy (`StrategyReads.user`),
  picks with their theme (`bloasis.serve.v1_wire`), signals with ATR stops and profit tiers as
  doubles; GetPersonalizedStrategy goes through the answer cache (`from_cache` says so).
- GetPreferences / UpdatePreferences (write scope): the same stored preferences as v2, the
  profile as the original enum, sectors by their original names.
- RunAIAnalysis (write scope): `bloasis.app.recompute.recompute_user` — the user's strategy
  recomputed now from the latest session's data, stored and its events published;
  deterministic, no LLM. One at a time per server (it loads market data).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any, Final

import grpc

from bloasis.app.daily import DailyRequest, run_daily
from bloasis.config import Settings
from bloasis.pb.v1 import strategy_pb2 as st1
from bloasis.pb.v2 import strategy_pb2 as st2
from bloasis.pipeline import PipelineError
from bloasis.serve.answer_cache import Answer, Policy
from bloasis.serve.auth import check_user_access
from bloasis.serve.reads import Served, SharedBodies, StrategyReads, UserServed
from bloasis.serve.strategy_v2 import StrategyServicer as V2
from bloasis.serve.strategy_v2 import user_answer_policy, user_tag
from bloasis.serve.v1_wire import (
    iso_of,
    pick_v1,
    picks_by_theme,
    preferences_from_v1,
    preferences_v1,
    signal_v1,
    v1_sector,
)
from bloasis.serve.validation import RequestError, invalid, require_user_id
from bloasis.store.regimes import latest_regime

log = logging.getLogger(__name__)

SERVICE: Final = st1.DESCRIPTOR.services_by_name["StrategyService"]
MAX_PICKS: Final = 1000
RECOMPUTE_TIMEOUT_S: Final = 120.0
_FROM_CACHE: Final = st1.StrategyResponse(from_cache=True).SerializeToString()


class StrategyServicer:
    def __init__(self, v2: V2, settings: Settings, *, user_cache_seconds: float) -> None:
        self.v2 = v2
        self.reads: StrategyReads = v2.reads
        self.settings = settings
        self.user_cache_seconds = user_cache_seconds
        # One recompute at a time per server, held by the worker thread itself: a call that
        # times out leaves its recompute running, and the next one waits for it.
        self._recompute = threading.Lock()
        self._shared = SharedBodies(self._shared_response)

    async def _user(self, user_id: str, context: Any) -> Served:
        require_user_id(user_id)
        check_user_access(user_id)
        return await self.reads.user(user_id, None, context)

    def _picks(self, s: st2.Strategy) -> list[st1.StockPick]:
        theme_of = picks_by_theme(s.picks)
        return [pick_v1(p, theme_of[p.symbol]) for p in s.picks]

    async def _preferences(self, user_id: str, context: Any) -> st1.UserPreferences:
        """For the strategy answers (Redis, then PostgreSQL); GetPreferences reads PostgreSQL."""
        return preferences_v1(await self.reads.preferences(user_id, context))

    # --- GetStockPicks -----------------------------------------------------------------------

    async def GetStockPicks(
        self, request: st1.StockPicksRequest, context: Any
    ) -> st1.StockPicksResponse:
        if not 0 <= request.max_picks <= MAX_PICKS:
            raise invalid(
                f"max_picks must be in [0, {MAX_PICKS}] (0: all), got {request.max_picks}"
            )
        served = await self._user(request.user_id, context)
        prefs = await self._preferences(request.user_id, context)
        picks = self._picks(served.strategy)
        if request.max_picks:
            picks = picks[: request.max_picks]
        return st1.StockPicksResponse(
            picks=picks,
            regime=served.strategy.regime,
            applied_preferences=prefs,
            generated_at=iso_of(served.strategy.computed_at),
        )

    # --- GetPersonalizedStrategy -------------------------------------------------------------

    def answer_tag_GetPersonalizedStrategy(self, request: st1.StrategyRequest) -> str | None:
        return user_tag(request.user_id)

    def answer_policy_GetPersonalizedStrategy(self) -> Policy:
        return user_answer_policy(self.reads, self.user_cache_seconds, _FROM_CACHE)

    def _strategy_v1(
        self, s: st2.Strategy, prefs: st1.UserPreferences | None
    ) -> st1.StrategyResponse:
        picks = self._picks(s)
        by_symbol = {p.symbol: p for p in s.picks}
        sectors: list[str] = []
        for p in s.picks:
            if v1_sector(p.sector) not in sectors:
                sectors.append(v1_sector(p.sector))
        themes: list[str] = []
        for p in picks:
            if p.theme not in themes:
                themes.append(p.theme)
        return st1.StrategyResponse(
            user_id=s.user_id,
            regime=s.regime,
            selected_sectors=sectors,
            top_themes=themes[:5],
            stock_picks=picks,
            preferences=prefs,  # None: left unset
            cached_at=iso_of(s.computed_at),
            signals=[signal_v1(g, by_symbol.get(g.symbol)) for g in s.signals],
        )

    def _shared_response(self, u: UserServed) -> bytes:
        """Everything of the answer but the user's id and preferences (shared by every user
        with the same stored content)."""
        return self._strategy_v1(u.base, None).SerializeToString()

    async def GetPersonalizedStrategy(self, request: st1.StrategyRequest, context: Any) -> Answer:
        require_user_id(request.user_id)
        check_user_access(request.user_id)
        u = await self.reads.user_parts(request.user_id, context)
        prefs = await self._preferences(request.user_id, context)
        own = st1.StrategyResponse(user_id=u.user_id, preferences=prefs)
        return Answer(own.SerializeToString(), shared=self._shared.get(u))

    # --- preferences -------------------------------------------------------------------------

    async def GetPreferences(
        self, request: st1.GetPreferencesRequest, context: Any
    ) -> st1.UserPreferences:
        user_id = require_user_id(request.user_id)
        check_user_access(user_id)
        stored = await self.reads.store.call(
            lambda: self.reads.get_preferences(user_id), context, "reading preferences"
        )
        return preferences_v1(stored.prefs)

    async def UpdatePreferences(
        self, request: st1.UpdatePreferencesRequest, context: Any
    ) -> st1.UpdatePreferencesResponse:
        require_user_id(request.user_id)
        check_user_access(request.user_id, write=True)
        stored = await self.reads.update_preferences(preferences_from_v1(request), context)
        return st1.UpdatePreferencesResponse(success=True, preferences=preferences_v1(stored.prefs))

    # --- RunAIAnalysis -----------------------------------------------------------------------

    def _recompute_user(self, user_id: str) -> dict[str, Any]:
        """Blocking: the daily run's application service for this one user, on the latest
        computed session (its own event loop: this runs in a worker thread)."""
        with self.reads.store.engine.connect() as conn:
            latest = latest_regime(conn, self.reads.model_version)
        if latest is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no regime computed yet for model {self.reads.model_version}; run the pipeline",
            )
        request = DailyRequest(
            as_of=latest.as_of,
            trigger="manual",
            users=[user_id],
            relay=bool(self.settings.kafka_bootstrap_servers),
        )
        with self._recompute:
            return asyncio.run(run_daily(request, run_id=uuid.uuid4(), settings=self.settings))

    async def RunAIAnalysis(
        self, request: st1.RunAIAnalysisRequest, context: Any
    ) -> st1.RunAIAnalysisResponse:
        user_id = require_user_id(request.user_id)
        check_user_access(user_id, write=True)
        # An unknown user is answered at once, not after loading market data.
        await self.reads.store.call(
            lambda: self.reads.get_preferences(user_id), context, "reading preferences"
        )
        remaining = context.time_remaining() if context is not None else None
        timeout = RECOMPUTE_TIMEOUT_S if remaining is None else min(RECOMPUTE_TIMEOUT_S, remaining)
        try:
            summary = await asyncio.wait_for(
                asyncio.to_thread(self._recompute_user, user_id), timeout
            )
        except PipelineError as exc:
            code = (
                grpc.StatusCode.NOT_FOUND
                if "unknown users" in str(exc)
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            raise RequestError(code, str(exc)) from None
        except TimeoutError:
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the recompute did not finish in time"
            ) from None
        finally:
            self.reads.user_changed(user_id)
        served = await self.reads.user(user_id, None, context)
        s = served.strategy
        by_symbol = {p.symbol: p for p in s.picks}
        signals = [signal_v1(g, by_symbol.get(g.symbol)) for g in s.signals]
        relay = str(summary.get("relay", "skipped"))
        errors: list[str] = []
        if not summary.get("user_strategies_written"):
            phase, published = "unchanged", 0
        elif relay.startswith("published"):
            phase, published = "published", len(signals)
        elif relay == "skipped":
            phase, published = "stored", 0
        else:
            phase, published = "queued", 0
            errors.append(f"events stay in the outbox: {relay}")
        log.info("RunAIAnalysis run %s for %s: %s", summary.get("run_id"), user_id, phase)
        return st1.RunAIAnalysisResponse(
            analysis_id=str(summary.get("run_id", "")),
            user_id=user_id,
            phase=phase,
            signals=signals,
            signals_published=published,
            errors=errors,
        )
