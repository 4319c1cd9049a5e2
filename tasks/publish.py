"""Publishing tasks: the outbox relay (the Redis switch is in tasks.strategy). Both run after
the commit, so a failure here delays what readers see; it never loses or corrupts a result."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bloasis.app import steps
from tasks.common import named

relay_outbox = task(
    name="relay-outbox", cache_policy=NO_CACHE, task_run_name=named("relay-outbox")
)(steps.relay_outbox)
