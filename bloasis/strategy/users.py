"""Per-user strategies: cheap derivations of a profile's `ProfileBook`.

A user's preferences act on the book's ranked pool:
- excluded sectors are removed; the next-ranked candidates backfill the top N;
- preferred sectors get +10 points on the final score (`PREFERRED_BOOST`) before re-ranking (the
  pick's reported score is the boosted one, at most 100, and its rationale says so);
- max_single_position (rounded down to 0.0001) caps positions below the profile's cap;
- then the profile's sizing (`bloasis.strategy.signals.size_positions`): volatility target,
  optimiser blend, position cap, correlation halving, 30% sector cap, total <= 1.

Only three things decide the result: the excluded and preferred sectors that occur in the pool,
and the effective position cap. That signature is memoised, so users who share it share the
picks, signals and rationale objects; each user costs one `Strategy` with its own id. With
neutral preferences and the profile's cap the derivation is the profile strategy itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Final

from bloasis.strategy.profiles import describe_factors
from bloasis.strategy.signals import ACTION_FACTOR, CORRELATION_LIMIT, SECTOR_CAP, size_positions
from bloasis.strategy.types import GICS_SECTORS, PROFILES, Pick, Signal, Strategy, UserPreferences

if TYPE_CHECKING:
    from bloasis.strategy.engine import ProfileBook

PREFERRED_BOOST = 10.0
UNITS: Final = 10_000  # weights are whole multiples of 0.0001

Signature = tuple[frozenset[str], frozenset[str], int]
_KNOWN_SECTORS: Final = frozenset(GICS_SECTORS)
_ZERO, _ONE = Decimal(0), Decimal(1)


class InvalidPreferences(ValueError):
    """Preferences that cannot be used; `messages` each start with the field's name."""

    def __init__(self, user_id: str, messages: list[str]) -> None:
        super().__init__(f"invalid preferences for user {user_id!r}: " + "; ".join(messages))
        self.user_id = user_id
        self.messages = messages


def _valid_user_id(user_id: object) -> bool:
    return isinstance(user_id, str) and bool(user_id.strip())


def validate_preferences(prefs: UserPreferences) -> list[str]:
    """Problems with `prefs`, each message starting with the field it is about; [] when valid."""
    problems: list[str] = []
    if not _valid_user_id(prefs.user_id):
        problems.append("user_id: must be a non-empty string")
    if prefs.risk_profile not in PROFILES:
        problems.append(
            f"risk_profile: unknown profile {prefs.risk_profile!r} "
            f"(expected one of {', '.join(PROFILES)})"
        )
    m = prefs.max_single_position
    if not isinstance(m, Decimal) or not m.is_finite() or not _ZERO < m <= _ONE:
        problems.append(f"max_single_position: must be a decimal in (0, 1], got {m!s}")
    preferred, excluded = prefs.preferred_sectors, prefs.excluded_sectors
    if not _KNOWN_SECTORS.issuperset(preferred) or not _KNOWN_SECTORS.issuperset(excluded):
        for name, sectors in (("preferred_sectors", preferred), ("excluded_sectors", excluded)):
            problems += [
                f"{name}: unknown sector {s!r}" for s in sectors if s not in _KNOWN_SECTORS
            ]
    if preferred and excluded:
        both = sorted(set(preferred).intersection(excluded))
        problems += [f"preferred_sectors: {s!r} is also in excluded_sectors" for s in both]
    return problems


@dataclass(frozen=True)
class _Derived:
    """What every user with the same signature shares."""

    picks: tuple[Pick, ...]
    signals: tuple[Signal, ...]
    cash: Decimal
    rationale: str


class _Deriver:
    """Derivations from one book, memoised by signature (one per batch: the memo is freed
    with it)."""

    def __init__(self, book: ProfileBook) -> None:
        self.book = book
        self.pool_sectors = frozenset(book.sectors)
        self.profile_units = round(book.params.position_cap * UNITS)
        self.factors = [ACTION_FACTOR[a] for a in book.actions]
        self.memo: dict[Signature, _Derived] = {}
        self.signals: dict[tuple[int, int], Signal] = {}
        self.picks: dict[tuple[int, int, bool], Pick] = {}

    def signature(self, prefs: UserPreferences) -> Signature:
        excluded = self.pool_sectors.intersection(prefs.excluded_sectors)
        preferred = self.pool_sectors.intersection(prefs.preferred_sectors) - excluded
        user_units = int((prefs.max_single_position * UNITS).to_integral_value(ROUND_FLOOR))
        return excluded, preferred, min(self.profile_units, user_units)

    def derive(self, sig: Signature) -> _Derived:
        got = self.memo.get(sig)
        if got is None:
            got = self.memo[sig] = self._compute(*sig)
        return got

    def _compute(self, excluded: frozenset[str], preferred: frozenset[str], cap: int) -> _Derived:
        b = self.book
        ranked = sorted(
            (-(s + PREFERRED_BOOST) if sec in preferred else -s, i)
            for i, (s, sec) in enumerate(zip(b.scores, b.sectors, strict=True))
            if sec not in excluded
        )
        chosen = [i for _, i in ranked[: b.top_n]]
        pos = {i: k for k, i in enumerate(chosen)}
        weights, halved = size_positions(
            [b.vols[i] for i in chosen],
            None if b.proposal is None else [b.proposal[i] for i in chosen],
            [b.sectors[i] for i in chosen],
            [self.factors[i] for i in chosen],
            [[pos[j] for j in b.correlated[i] if j in pos] for i in chosen],
            target_vol=b.params.target_vol,
            cap=cap / UNITS,
        )
        # Truncate to whole units: every cap is a whole number of units, so none can break.
        units = [int(w * UNITS) for w in weights]
        return _Derived(
            picks=tuple(
                self.pick(i, rank, b.sectors[i] in preferred)
                for rank, i in enumerate(chosen, start=1)
            ),
            signals=tuple(self.signal(i, u) for i, u in zip(chosen, units, strict=True)),
            cash=Decimal(UNITS - sum(units)).scaleb(-4),
            rationale=self._rationale(chosen, units, halved, excluded, preferred, cap),
        )

    def signal(self, i: int, units: int) -> Signal:
        got = self.signals.get((i, units))
        if got is None:
            b, lv = self.book, self.book.levels[i]
            got = self.signals[(i, units)] = Signal(
                symbol=b.symbols[i],
                sector=b.sectors[i],
                action=b.actions[i],
                weight=Decimal(units).scaleb(-4),
                entry_price=lv.entry,
                stop_loss=lv.stop,
                profit_tiers=lv.tiers,
                trailing_stop_pct=lv.trailing_stop_pct,
            )
        return got

    def pick(self, i: int, rank: int, boosted: bool) -> Pick:
        got = self.picks.get((i, rank, boosted))
        if got is None:
            b = self.book
            score = min(100.0, b.scores[i] + PREFERRED_BOOST) if boosted else b.scores[i]
            why = (
                f"{b.symbols[i]} ({b.sectors[i]}) scores {score:.1f}/100 for the {b.profile} "
                f"profile in a {b.regime} regime, led by "
                f"{describe_factors(b.factor_scores[i], b.factor_weights)}"
            )
            if boosted:
                why += f" (+{PREFERRED_BOOST:.0f} points: preferred sector)"
            got = self.picks[(i, rank, boosted)] = Pick(
                symbol=b.symbols[i],
                sector=b.sectors[i],
                rank=rank,
                final_score=round(score, 2),
                factor_scores=b.factor_scores[i],
                rationale=f"{why}; {b.action_notes[i]}.",
            )
        return got

    def _rationale(
        self,
        chosen: list[int],
        units: list[int],
        halved: int,
        excluded: frozenset[str],
        preferred: frozenset[str],
        cap: int,
    ) -> str:
        b = self.book
        actions = [b.actions[i] for i in chosen]
        invested = sum(units)
        head = (
            f"{b.profile.capitalize()} profile, {b.regime} regime (risk {b.risk_level}), "
            f"as of {b.as_of.isoformat()}: {len(chosen)} picks ({actions.count('buy')} buy, "
            f"{actions.count('hold')} hold, {actions.count('sell')} sell), invested "
            f"{invested / 100:.2f}%, cash {(UNITS - invested) / 100:.2f}%"
        )
        parts = [head]
        exposure: dict[str, int] = {}
        for i, u in zip(chosen, units, strict=True):
            exposure[b.sectors[i]] = exposure.get(b.sectors[i], 0) + u
        if exposure:
            by_weight = sorted(exposure.items(), key=lambda kv: (-kv[1], kv[0]))
            parts.append("by sector " + ", ".join(f"{s} {u / 100:.2f}%" for s, u in by_weight))
        else:
            parts.append("no candidate left: all cash")
        parts.append(
            f"sizing: volatility target {b.params.target_vol:.0%} a year, {b.optimiser_note}; "
            f"caps {cap / 100:.2f}% per position, {SECTOR_CAP:.0%} per sector; {halved} "
            f"position(s) halved for a correlation above {CORRELATION_LIMIT}"
        )
        if excluded:
            parts.append("excluded " + ", ".join(sorted(excluded)))
        if preferred:
            boost = f"preferred (+{PREFERRED_BOOST:.0f} points) "
            parts.append(boost + ", ".join(sorted(preferred)))
        return "; ".join(parts) + "."


def _strategy(book: ProfileBook, d: _Derived, strategy_id: str, user_id: str | None) -> Strategy:
    return Strategy(
        strategy_id=strategy_id,
        as_of=book.as_of,
        risk_profile=book.profile,
        user_id=user_id,
        regime=book.regime,
        risk_level=book.risk_level,
        picks=d.picks,
        signals=d.signals,
        cash_weight=d.cash,
        rationale=d.rationale,
    )


def profile_strategy(book: ProfileBook) -> Strategy:
    """The profile's own strategy (no preferences, the profile's cap)."""
    deriver = _Deriver(book)
    d = deriver.derive((frozenset(), frozenset(), deriver.profile_units))
    return _strategy(book, d, book.strategy_id, None)


def pool_entries(book: ProfileBook) -> list[tuple[Pick, Signal]]:
    """The whole pool as (pick ranked by pool position, weight-0 signal)."""
    deriver = _Deriver(book)
    return [(deriver.pick(i, i + 1, False), deriver.signal(i, 0)) for i in range(len(book.symbols))]


def user_strategy_id(user_id: str, book: ProfileBook, model_version: str) -> str:
    return f"user:{user_id}:{book.as_of.isoformat()}:{model_version}"


def derive_user_strategy(
    book: ProfileBook, prefs: UserPreferences, *, model_version: str
) -> Strategy:
    """One user's strategy. Raises `InvalidPreferences` (a ValueError naming the fields) for bad
    preferences or a book of another profile."""
    problems = validate_preferences(prefs)
    if not problems and prefs.risk_profile != book.profile:
        problems = [f"risk_profile: {prefs.risk_profile!r} but the book is for {book.profile!r}"]
    if problems:
        raise InvalidPreferences(prefs.user_id, problems)
    deriver = _Deriver(book)
    d = deriver.derive(deriver.signature(prefs))
    return _strategy(book, d, user_strategy_id(prefs.user_id, book, model_version), prefs.user_id)


def derive_many(
    books: Mapping[str, ProfileBook], prefs: Sequence[UserPreferences], *, model_version: str
) -> list[Strategy]:
    """Strategies for many users, in input order. Results are memoised by preference content
    (validated once) and derivations by signature, so the cost per user is a dict lookup and one
    `Strategy`. Raises `InvalidPreferences` for the first invalid user (nothing is returned
    then; validate first with `validate_preferences` to skip bad ones), ValueError when a
    profile has no book."""
    derivers: dict[str, _Deriver] = {}
    suffixes: dict[str, str] = {}
    done: dict[tuple[object, ...], tuple[ProfileBook, _Derived]] = {}
    out: list[Strategy] = []
    for p in prefs:
        key = (
            p.risk_profile,
            tuple(p.preferred_sectors),
            tuple(p.excluded_sectors),
            p.max_single_position,
        )
        got = done.get(key)
        if got is None:
            if validate_preferences(p):
                raise InvalidPreferences(p.user_id, validate_preferences(p))
            deriver = derivers.get(p.risk_profile)
            if deriver is None:
                book = books.get(p.risk_profile)
                if book is None or book.profile != p.risk_profile:
                    raise ValueError(f"no profile book for risk_profile {p.risk_profile!r}")
                deriver = derivers[p.risk_profile] = _Deriver(book)
                suffixes[p.risk_profile] = f":{book.as_of.isoformat()}:{model_version}"
            got = done[key] = (deriver.book, deriver.derive(deriver.signature(p)))
        elif not _valid_user_id(p.user_id):  # the memo does not cover user_id
            raise InvalidPreferences(p.user_id, validate_preferences(p))
        book, derived = got
        user_id = p.user_id
        sid = "user:" + user_id + suffixes[book.profile]
        out.append(_strategy(book, derived, sid, user_id))
    return out
