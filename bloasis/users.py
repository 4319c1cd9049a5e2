"""User administration: the demo user, single users, and seeded populations for scale runs."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numpy as np
from sqlalchemy import Engine

from bloasis.store import strategies as store
from bloasis.strategy.types import GICS_SECTORS, PROFILES, UserPreferences


def ensure_user(engine: Engine, prefs: UserPreferences) -> bool:
    """Create the user if missing (never overwrites); True when created."""
    with engine.begin() as conn:
        if store.get_preferences(conn, prefs.user_id) is not None:
            return False
        store.upsert_preferences(conn, prefs)
    return True


def random_population(n: int, *, seed: int = 0, prefix: str = "u") -> list[UserPreferences]:
    """`n` users with plausible preferences: most keep their profile's defaults, some exclude
    or prefer one or two sectors and set their own position cap. Deterministic per seed."""
    rng = np.random.default_rng(seed)
    profiles = rng.choice(len(PROFILES), size=n, p=[0.25, 0.5, 0.25])
    custom = rng.random(n) < 0.4
    caps = (Decimal("0.05"), Decimal("0.08"), Decimal("0.10"), Decimal("0.15"), Decimal("0.20"))
    cap_idx = rng.integers(0, len(caps), size=n)
    n_ex = rng.integers(0, 3, size=n)
    n_pref = rng.integers(0, 3, size=n)
    out = []
    width = len(str(n))
    for i in range(n):
        uid = f"{prefix}{i:0{width}d}"
        if not custom[i]:
            out.append(UserPreferences(uid, PROFILES[profiles[i]]))
            continue
        picked = rng.permutation(len(GICS_SECTORS))[: n_ex[i] + n_pref[i]]
        ex = tuple(sorted(GICS_SECTORS[j] for j in picked[: n_ex[i]]))
        pref = tuple(sorted(GICS_SECTORS[j] for j in picked[n_ex[i] :]))
        out.append(UserPreferences(uid, PROFILES[profiles[i]], pref, ex, caps[cap_idx[i]]))
    return out


def seed_population(engine: Engine, prefs: Sequence[UserPreferences]) -> int:
    """Bulk-create users (existing ids are left alone); returns how many were created."""
    with engine.begin() as conn:
        return store.copy_preferences(conn, prefs)
