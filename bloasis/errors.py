"""One-line descriptions of the failures a user can act on (the CLI prints them)."""

from __future__ import annotations

import importlib

# (module, class, prefix): resolved lazily so the CLI does not import every adapter at start.
_KNOWN = (
    ("bloasis.stack", "StackError", "embedded stack"),
    ("bloasis.pipeline", "PipelineError", "pipeline"),
    ("bloasis.local", "LocalError", "local deployment"),
    ("bloasis.serve.group", "GroupError", "gRPC server group"),
    ("bloasis.regime.model", "RegimeInputError", "regime"),
    ("bloasis.backtest.types", "BacktestInputError", "backtest"),
    ("bloasis.app.regime_compare", "CompareError", "regime comparison"),
    ("bloasis.publish.relay", "RelayError", "relay"),
    ("bloasis.serve.client", "ClientError", "gRPC"),
    ("bloasis.marketdata", "DataValidationError", "market data"),
    ("bloasis.marketdata", "DataFormatError", "market data"),
    ("bloasis.app.ingest", "IngestError", "ingest"),
    ("bloasis.marketdata.providers", "ProviderError", "provider"),
    ("bloasis.marketdata.universe", "UniverseError", "universe"),
    ("sqlalchemy.exc", "OperationalError", "PostgreSQL unreachable"),
    ("redis.exceptions", "ConnectionError", "Redis unreachable"),
    ("aiokafka.errors", "KafkaError", "Kafka"),
)


def describe(exc: BaseException) -> str | None:
    for module, name, prefix in _KNOWN:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(exc, cls):
            text = str(exc).strip().splitlines()
            first = text[0] if text else type(exc).__name__
            return f"{prefix}: {first}" if len(text) <= 1 else f"{prefix}: " + "\n".join(text)
    return None
