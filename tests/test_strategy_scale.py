"""Scale smoke test (no timing assertions): three profile books on a 500-symbol x 10-year
synthetic universe and strategies for 100,000 random users."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bloasis.marketdata import SyntheticSource
from bloasis.regime.types import RegimeResult
from bloasis.strategy.engine import build_profile_book
from bloasis.strategy.sectors import analyze_sectors
from bloasis.strategy.types import GICS_SECTORS, PROFILES, UserPreferences
from bloasis.strategy.users import derive_many


@pytest.mark.slow
def test_profile_books_and_100k_users_on_a_large_universe() -> None:
    md = SyntheticSource(500, 10, seed=1).load()
    d = md.last_date
    regime = RegimeResult(
        as_of=d,
        regime="bull",
        confidence=0.8,
        risk_level="low",
        trigger="manual",
        reasoning="scale test",
        indicators={},
        model_version="t",
        run_id=uuid.UUID(int=3),
        computed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    analysis = analyze_sectors(md, d, "bull")
    books = {p: build_profile_book(md, d, regime, analysis, p, model_version="t") for p in PROFILES}
    for book in books.values():
        assert len(book.strategy.picks) == book.top_n

    rng = random.Random(0)
    prefs = []
    for i in range(100_000):
        preferred = tuple(rng.sample(GICS_SECTORS, rng.randint(0, 3)))
        rest = [s for s in GICS_SECTORS if s not in preferred]
        prefs.append(
            UserPreferences(
                user_id=f"u{i}",
                risk_profile=rng.choice(PROFILES),
                preferred_sectors=preferred,
                excluded_sectors=tuple(rng.sample(rest, rng.randint(0, 3))),
                max_single_position=Decimal(rng.randint(1, 100)) / 100,
            )
        )
    out = derive_many(books, prefs, model_version="t")
    assert len(out) == len(prefs)
    for u, s in zip(prefs[::997], out[::997], strict=True):
        assert s.user_id == u.user_id and s.risk_profile == u.risk_profile
        assert all(g.weight <= u.max_single_position for g in s.signals)
        assert not {g.sector for g in s.signals} & set(u.excluded_sectors)
        assert sum(g.weight for g in s.signals) + s.cash_weight == 1
