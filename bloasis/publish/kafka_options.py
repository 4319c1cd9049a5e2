"""Security arguments for every aiokafka client the app creates (producer, admin), from settings.

`BLOASIS_KAFKA_SECURITY_PROTOCOL` is PLAINTEXT (default: no extra arguments), SSL, SASL_PLAINTEXT
or SASL_SSL; SASL takes `BLOASIS_KAFKA_SASL_MECHANISM` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
`BLOASIS_KAFKA_SASL_USERNAME` and `BLOASIS_KAFKA_SASL_PASSWORD`; SSL verifies the broker against
`BLOASIS_KAFKA_SSL_CAFILE` (or the system roots). `bloasis.config` checks the combination.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from bloasis.config import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaAdminClient / AIOKafkaConsumer."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        # aiokafka's helper: hostname checking on, system roots unless a CA file is given.
        cafile = settings.kafka_ssl_cafile
        out["ssl_context"] = create_ssl_context(cafile=str(cafile) if cafile else None)
    if protocol.startswith("SASL_"):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism
        # aiokafka takes SCRAM credentials through the same two arguments as PLAIN.
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = settings.value_of("kafka_sasl_password")
    return out
