"""One read-through path for every "latest value" the server serves: the store layers behind a
small protocol (as Feast composes online stores), asked in order until one has the value.

The layers are the in-process snapshot (kept fresh by LISTEN/NOTIFY), Redis (optional; any
failure is a miss) and PostgreSQL (the system of record; its failures are the call's status).
Every lookup is counted per layer (`bloasis_cache_lookups_total{kind,layer,result}`), and a
value that only PostgreSQL had pokes the refresher: the snapshot missed a notification, and
the refresher, the snapshot's single writer, catches up (so it never goes backwards).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from bloasis import metrics
from bloasis.serve.snapshot import Snapshot, StoreRefresher

SERVED_FROM_SNAPSHOT: Final = "snapshot"
SERVED_FROM_REDIS: Final = "redis"
SERVED_FROM_POSTGRES: Final = "postgres"

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")
K_contra = TypeVar("K_contra", contravariant=True)
V_co = TypeVar("V_co", covariant=True)


class Layer(Protocol[K_contra, V_co]):
    """A store layer: `get` answers the value for `key`, or None (a miss)."""

    @property
    def name(self) -> str: ...

    def get(self, key: K_contra, context: Any) -> Awaitable[V_co | None]: ...


@dataclass(frozen=True)
class SnapshotLayer(Generic[K, V, S]):
    """The in-process snapshot: `pick(snapshot value, key)` (no await, no I/O)."""

    snapshot: Snapshot[S]
    pick: Callable[[S, K], V | None]
    name: str = SERVED_FROM_SNAPSHOT

    async def get(self, key: K, context: Any) -> V | None:
        value = self.snapshot.value
        return None if value is None else self.pick(value, key)


@dataclass(frozen=True)
class FnLayer(Generic[K, V]):
    """A store read given as a coroutine function (Redis: a miss on failure; PostgreSQL:
    `StoreAccess.call`, failures raise the call's status)."""

    name: str
    read: Callable[[K, Any], Awaitable[V | None]]

    async def get(self, key: K, context: Any) -> V | None:
        return await self.read(key, context)


class ReadThrough(Generic[K, V]):
    """Layers asked in order; the first value wins, with the name of the layer it came from."""

    def __init__(
        self,
        kind: str,
        layers: Sequence[Layer[K, V]],
        *,
        refresher: StoreRefresher | None = None,
    ) -> None:
        self.kind = kind  # the metric's `kind` label: regime | sectors | strategy | ...
        self.layers = tuple(layers)
        self.names = tuple(layer.name for layer in self.layers)
        self.refresher = refresher

    async def get(self, key: K, context: Any, *, start: str | None = None) -> tuple[V | None, str]:
        """(value or None, the layer that answered or the last asked). `start` skips the layers
        before the one of that name (force_refresh: "postgres")."""
        layers = self.layers if start is None else self.layers[self.names.index(start) :]
        name = layers[-1].name
        for layer in layers:
            name = layer.name
            value = await layer.get(key, context)
            metrics.cache_lookup(self.kind, name, value is not None)
            if value is not None:
                if name == SERVED_FROM_POSTGRES and self.refresher is not None:
                    self.refresher.poke()
                return value, name
        return None, name
