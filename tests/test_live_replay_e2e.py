"""`make up LIVE=replay` for real: the whole local deployment (stack, Prefect server, the
deployments, a worker, gRPC) against the local provider, which publishes one session every few
seconds; each session's regime must be served over gRPC, `bloasis status` must read FRESH and
`bloasis data status` must name each series' source. Stops everything it started."""

from __future__ import annotations

from datetime import date

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_live_replay_serves_each_published_session() -> None:
    from bench import live_replay

    e = live_replay.run(sessions=3, every=10, start=date(2022, 11, 1))
    assert e["sessions"] == 3 and e["not_served"] == [], e
    assert e["max_s"] <= 30, e["latencies_s"]
    assert e["status_freshness"]["breach"] is False and e["status_freshness"]["age_hours"] < 36
    assert e["data_status_sources"]["^SPX"] == "yahoo"
    assert e["data_status_sources"]["SP500"] == "fred"
