"""bloasis.strategy.v2.StrategyService: profile and user strategies (`StrategyReads`), stock
picks and preferences. A user's latest unfiltered GetStrategy goes through the answer cache
(valid while the snapshots and the user's write generation are unchanged, at most
BLOASIS_USER_STRATEGY_CACHE_SECONDS)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from bloasis.pb.v2 import strategy_pb2
from bloasis.serve.answer_cache import Answer, Policy
from bloasis.serve.auth import check_user_access, user_allowed
from bloasis.serve.reads import Served, SharedBodies, StrategyReads, UserServed
from bloasis.serve.readthrough import SERVED_FROM_SNAPSHOT
from bloasis.serve.validation import (
    MAX_SECTORS,
    check_user_id,
    invalid,
    parse_date_field,
    parse_decimal,
    parse_profile,
    parse_symbols,
    require_user_id,
    show,
)
from bloasis.strategy.types import UserPreferences
from bloasis.wire import preferences_to_pb

SERVICE: Final = strategy_pb2.DESCRIPTOR.services_by_name["StrategyService"]
# user_preferences.max_single_position is NUMERIC(6, 4): more places would be rounded silently.
MAX_POSITION_PLACES: Final = 4
# Appended to a cached answer: serialised messages concatenate (a later scalar field wins).
_FROM_SNAPSHOT: Final = strategy_pb2.StrategyResponse(
    served_from=SERVED_FROM_SNAPSHOT
).SerializeToString()


@dataclass(frozen=True)
class StrategyQuery:
    user_id: str  # '' for a risk profile's strategy
    profile: str  # '' for a user's strategy
    as_of: date | None  # None: the latest stored
    symbols: frozenset[str]  # upper-cased; empty: all


def parse_strategy_request(req: strategy_pb2.GetStrategyRequest) -> StrategyQuery:
    if req.user_id and req.risk_profile:
        raise invalid("give either user_id or risk_profile, not both")
    if not req.user_id and not req.risk_profile:
        raise invalid("user_id or risk_profile is required")
    if req.user_id:
        check_user_id(req.user_id)
    else:
        parse_profile("risk_profile", req.risk_profile)
    return StrategyQuery(
        req.user_id,
        req.risk_profile,
        parse_date_field("as_of", req.as_of),
        parse_symbols(req.symbols),
    )


def preferences_from_pb(req: strategy_pb2.UpdatePreferencesRequest) -> UserPreferences:
    """The gRPC-level checks; the domain rules are `bloasis.strategy.users.validate_preferences`.

    Empty risk_profile / max_single_position (unset in proto3) take the domain defaults."""
    if not req.HasField("preferences"):
        raise invalid("preferences is required")
    p = req.preferences
    require_user_id(p.user_id, "preferences.user_id")
    defaults = UserPreferences(user_id=p.user_id)
    max_pos = defaults.max_single_position
    if p.max_single_position:
        max_pos = parse_decimal("max_single_position", p.max_single_position)
        exponent = max_pos.normalize().as_tuple().exponent  # trailing zeros are fine
        if isinstance(exponent, int) and -exponent > MAX_POSITION_PLACES:
            raise invalid(
                f"max_single_position has at most {MAX_POSITION_PLACES} decimal places, "
                f"got {show(p.max_single_position)}"
            )
    for field, values in (
        ("preferred_sectors", p.preferred_sectors),
        ("excluded_sectors", p.excluded_sectors),
    ):
        if len(values) > MAX_SECTORS:  # the domain rules judge the names themselves
            raise invalid(f"{field}: at most {MAX_SECTORS} entries, got {len(values)}")
    return UserPreferences(
        user_id=p.user_id,
        risk_profile=p.risk_profile or defaults.risk_profile,
        preferred_sectors=tuple(p.preferred_sectors),
        excluded_sectors=tuple(p.excluded_sectors),
        max_single_position=max_pos,
    )


def keep_symbols(pb: strategy_pb2.Strategy, symbols: frozenset[str]) -> None:
    """Restrict picks and signals in place; cash_weight stays the whole strategy's."""
    if not symbols:
        return
    picks = [p for p in pb.picks if p.symbol.upper() in symbols]
    signals = [g for g in pb.signals if g.symbol.upper() in symbols]
    del pb.picks[:]
    pb.picks.extend(picks)
    del pb.signals[:]
    pb.signals.extend(signals)


def user_answer_policy(reads: StrategyReads, ttl: float, hit_tail: bytes) -> Policy:
    """A user's latest strategy answer (v1 and v2): valid while `reads.user_version` is, for
    at most `ttl` seconds, handed only to callers allowed that user."""
    return Policy(
        version=reads.user_version, hit_tail=lambda: hit_tail, ttl=ttl, access=user_allowed
    )


def user_tag(user_id: str) -> str | None:
    """The answer-cache tag of a request for `user_id`'s latest strategy (None: no user)."""
    if not user_id:
        return None
    check_user_id(user_id)
    return user_id


class StrategyServicer:
    def __init__(self, reads: StrategyReads, *, user_cache_seconds: float) -> None:
        self.reads = reads
        self.model_version = reads.model_version
        self.snapshot = reads.snapshot
        self.user_cache_seconds = user_cache_seconds
        self._shared = SharedBodies(self._shared_response)

    async def serve(self, request: strategy_pb2.GetStrategyRequest, context: Any) -> Served:
        q = parse_strategy_request(request)
        if q.user_id:
            check_user_access(q.user_id)
            served = await self.reads.user(q.user_id, q.as_of, context)
        else:
            served = await self.reads.profile(q.profile, q.as_of, context)
        keep_symbols(served.strategy, q.symbols)
        return served

    # --- GetStrategy -------------------------------------------------------------------------

    def answer_tag_GetStrategy(self, request: strategy_pb2.GetStrategyRequest) -> str | None:
        """A user's latest strategy, unfiltered, is cached per user; anything else is not."""
        if request.risk_profile or request.as_of or request.symbols:
            return None
        return user_tag(request.user_id)

    def answer_policy_GetStrategy(self) -> Policy:
        return user_answer_policy(self.reads, self.user_cache_seconds, _FROM_SNAPSHOT)

    def _shared_response(self, u: UserServed) -> bytes:
        """Everything of a user's answer but its ids (shared by every user with the same
        stored content)."""
        return strategy_pb2.StrategyResponse(strategy=u.base, regime=u.regime).SerializeToString()

    async def GetStrategy(self, request: strategy_pb2.GetStrategyRequest, context: Any) -> Answer:
        if self.answer_tag_GetStrategy(request) is not None:
            # A user's latest, unfiltered: one shared body and the user's ids (less memory in
            # the answer cache, and a miss copies and serialises no strategy).
            check_user_access(request.user_id)
            u = await self.reads.user_parts(request.user_id, context)
            ids = strategy_pb2.Strategy(strategy_id=u.strategy_id, user_id=u.user_id)
            own = strategy_pb2.StrategyResponse(strategy=ids)
            tail = strategy_pb2.StrategyResponse(served_from=u.served_from)
            return Answer(
                own.SerializeToString(), tail.SerializeToString(), shared=self._shared.get(u)
            )
        s = await self.serve(request, context)
        body = strategy_pb2.StrategyResponse(strategy=s.strategy, regime=s.regime)
        tail = strategy_pb2.StrategyResponse(served_from=s.served_from)
        return Answer(body.SerializeToString(), tail.SerializeToString())

    async def GetStockPicks(
        self, request: strategy_pb2.GetStrategyRequest, context: Any
    ) -> strategy_pb2.GetStockPicksResponse:
        s = await self.serve(request, context)
        return strategy_pb2.GetStockPicksResponse(
            strategy_id=s.strategy.strategy_id,
            as_of=s.strategy.as_of,
            picks=s.strategy.picks,
            regime=s.regime,
            served_from=s.served_from,
        )

    # --- preferences -------------------------------------------------------------------------

    async def GetPreferences(
        self, request: strategy_pb2.GetPreferencesRequest, context: Any
    ) -> strategy_pb2.UserPreferences:
        user_id = require_user_id(request.user_id)
        check_user_access(user_id)
        stored = await self.reads.store.call(
            lambda: self.reads.get_preferences(user_id), context, "reading preferences"
        )
        return preferences_to_pb(stored.prefs, updated_at=stored.updated_at)

    async def UpdatePreferences(
        self, request: strategy_pb2.UpdatePreferencesRequest, context: Any
    ) -> strategy_pb2.UserPreferences:
        prefs = preferences_from_pb(request)
        check_user_access(prefs.user_id, write=True)
        stored = await self.reads.update_preferences(prefs, context)
        return preferences_to_pb(stored.prefs, updated_at=stored.updated_at)
