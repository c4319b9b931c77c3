"""Metrics: the per-request and per-update counters, whose labelled children are cached.

The counters are read back from the instance's own registry, as Prometheus would scrape
them; one request over a real server checks that the handlers feed them the same way.
"""

from __future__ import annotations

import gc
from typing import Any, cast

import pytest
import tornado.httpclient

from actors.follower import FeedFollower
from actors.leaderboard import LeaderboardActor
from actors.ranks import LiveRanks
from handlers.openapi_spec import openapi_document
from server.store.changes import RESTART_REASONS, NoOtherWriters
from server.support.metrics import UPDATE_OUTCOMES, Metrics
from tests.conftest import scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

COUNT = "scoreboard_request_duration_seconds_count"
SUM = "scoreboard_request_duration_seconds_sum"
RESPONSES = "scoreboard_http_responses_total"
UPDATES = "scoreboard_updates_total"
RESTARTS = "scoreboard_change_stream_restarts_total"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def label_values(metrics: Metrics, label: str) -> set[str]:
    """Every value ``label`` takes in any sample of the registry."""
    return {
        s.labels[label]
        for family in metrics.registry.collect()
        for s in family.samples
        if label in s.labels
    }


def test_a_request_is_counted_by_route_and_method_and_by_route_and_status() -> None:
    metrics = Metrics()
    metrics.request_done("update_score", "POST", 200, 0.004)
    assert sample(metrics, COUNT, route="update_score", method="POST") == 1
    assert sample(metrics, SUM, route="update_score", method="POST") == pytest.approx(0.004)
    bucket = "scoreboard_request_duration_seconds_bucket"
    assert sample(metrics, bucket, route="update_score", method="POST", le="0.005") == 1
    assert sample(metrics, bucket, route="update_score", method="POST", le="0.0025") == 0
    assert sample(metrics, RESPONSES, route="update_score", status="200") == 1
    assert sample(metrics, COUNT, route="update_score", method="GET") is None
    assert sample(metrics, RESPONSES, route="top_scores", status="200") is None


def test_repeated_requests_add_up_per_label_set() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.request_done("top_scores", "GET", 200, 0.001)
    metrics.request_done("top_scores", "GET", 503, 0.002)
    metrics.request_done("update_score", "POST", 429, 0.003)
    metrics.request_done("update_score", "POST", 200, 0.004)
    metrics.request_done("top_scores", "GET", 200, 0.001)
    # Latency by route and method, whatever the status...
    assert sample(metrics, COUNT, route="top_scores", method="GET") == 5
    assert sample(metrics, SUM, route="top_scores", method="GET") == pytest.approx(0.006)
    assert sample(metrics, COUNT, route="update_score", method="POST") == 2
    # ...and responses by route and status.
    assert sample(metrics, RESPONSES, route="top_scores", status="200") == 4
    assert sample(metrics, RESPONSES, route="top_scores", status="503") == 1
    assert sample(metrics, RESPONSES, route="update_score", status="429") == 1
    assert sample(metrics, RESPONSES, route="update_score", status="200") == 1


def test_labelled_children_are_looked_up_once_per_label_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    lookups: list[tuple[str, ...]] = []
    for metric in (metrics.request_seconds, metrics.responses, metrics.updates):
        real_labels = metric.labels

        def counting(*values: str, _real: Any = real_labels) -> Any:
            lookups.append(values)
            return _real(*values)

        monkeypatch.setattr(metric, "labels", counting)
    for _ in range(5):
        metrics.request_done("top_scores", "GET", 200, 0.001)
        metrics.request_done("healthz", "BREW", 405, 0.001)
        metrics.update_outcome("applied")
    assert sorted(lookups) == sorted(
        [
            ("top_scores", "GET"),
            ("top_scores", "200"),
            ("healthz", "other"),
            ("healthz", "405"),
            ("applied",),
        ]
    )
    assert sample(metrics, COUNT, route="top_scores", method="GET") == 5
    assert sample(metrics, RESPONSES, route="healthz", status="405") == 5
    assert sample(metrics, UPDATES, outcome="applied") == 5


@pytest.mark.parametrize("method", ["PROPFIND", "get", "BREW", "", None, "X" * 1000])
def test_an_unknown_method_is_counted_as_other(method: str | None) -> None:
    metrics = Metrics()
    metrics.request_done("healthz", method, 405, 0.001)
    metrics.request_done("healthz", method, 405, 0.001)
    assert sample(metrics, COUNT, route="healthz", method="other") == 2
    assert sample(metrics, RESPONSES, route="healthz", status="405") == 2
    assert label_values(metrics, "method") == {"other"}


def test_label_cardinality_stays_bounded_whatever_methods_clients_send() -> None:
    metrics = Metrics()
    known = ["GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"]
    for method in known:
        metrics.request_done("healthz", method, 200, 0.001)
    for i in range(200):
        metrics.request_done("healthz", f"M{i}", 405, 0.001)
    assert label_values(metrics, "method") == {*known, "other"}
    assert sample(metrics, COUNT, route="healthz", method="other") == 200


def test_update_outcomes_are_counted_and_add_up() -> None:
    metrics = Metrics()
    for outcome in ["applied", "applied", "rate_limited", "applied", "replayed"]:
        metrics.update_outcome(outcome)
    assert sample(metrics, UPDATES, outcome="applied") == 3
    assert sample(metrics, UPDATES, outcome="rate_limited") == 1
    assert sample(metrics, UPDATES, outcome="replayed") == 1
    assert sample(metrics, UPDATES, outcome="invalid_token") == 0  # there from start


def test_every_update_outcome_exists_at_zero_from_start() -> None:
    """increase() over a series born with its first event misses that event: the alerts'
    series must be there before anything happened."""
    metrics = Metrics()
    for outcome in UPDATE_OUTCOMES:
        assert sample(metrics, UPDATES, outcome=outcome) == 0, outcome


def test_every_restart_reason_exists_at_zero_once_a_follower_is_built() -> None:
    """The follower, which counts the restarts, creates every reason's series at zero."""
    metrics = Metrics()
    ranks = LiveRanks(cast(Any, None))
    FeedFollower(NoOtherWriters(), cast(LeaderboardActor, None), metrics, ranks=ranks)
    for reason in RESTART_REASONS:
        assert sample(metrics, RESTARTS, reason=reason) == 0, reason


def test_the_update_outcomes_are_what_the_update_route_answers() -> None:
    """applied, replayed and every error code the OpenAPI document gives the route."""
    operation = openapi_document()["paths"]["/api/update-score"]["post"]
    codes = set()
    for response in operation["responses"].values():
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        for part in schema.get("allOf", []):
            codes.update(part.get("properties", {}).get("error", {}).get("enum", []))
    # A 431 is answered before any handler runs (handlers/header_limit.py): no outcome.
    codes.discard("headers_too_large")
    assert set(UPDATE_OUTCOMES) == codes | {"applied", "replayed"}
    assert len(UPDATE_OUTCOMES) == len(set(UPDATE_OUTCOMES))


def test_two_instances_count_apart() -> None:
    one, two = Metrics(), Metrics()
    one.request_done("healthz", "GET", 200, 0.001)
    one.update_outcome("applied")
    assert sample(two, COUNT, route="healthz", method="GET") is None
    assert sample(two, UPDATES, outcome="applied") == 0
    assert sample(one, UPDATES, outcome="applied") == 1


def test_the_collectors_runs_are_exported_by_generation() -> None:
    metrics = Metrics()
    before = sample(metrics, "python_gc_collections_total", generation="0")
    assert before is not None
    gc.collect(0)
    after = sample(metrics, "python_gc_collections_total", generation="0")
    assert after is not None and after >= before + 1  # read from gc at scrape time
    for generation in ("1", "2"):
        assert sample(metrics, "python_gc_collections_total", generation=generation) is not None


async def test_a_request_with_an_unknown_method_is_counted_as_other_by_a_server() -> None:
    async with serving() as client:
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            client.base_url + "/healthz",
            method="PROPFIND",
            allow_nonstandard_methods=True,
            raise_error=False,
            request_timeout=scaled(5),
        )
        assert response.code == 405
        await client.request("GET", "/healthz")
        metrics = client.running.service.metrics
        assert sample(metrics, COUNT, route="healthz", method="other") == 1
        assert sample(metrics, COUNT, route="healthz", method="GET") == 1
        assert sample(metrics, RESPONSES, route="healthz", status="405") == 1
        assert "PROPFIND" not in label_values(metrics, "method")


def test_the_loop_histogram_is_scraped_as_a_prometheus_histogram() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 0.5, 7.0):  # a bound itself counts in its bucket
        metrics.request_done("top_scores", "GET", 200, seconds)
    bucket = "scoreboard_request_duration_seconds_bucket"
    labels = {"route": "top_scores", "method": "GET"}

    def at(le: str) -> float | None:
        return metrics.registry.get_sample_value(bucket, {**labels, "le": le})

    assert [at(le) for le in ("0.0005", "0.001", "0.005", "0.25", "0.5", "2.5", "+Inf")] == [
        1,
        1,
        3,
        3,
        4,
        4,
        5,
    ]
    assert sample(metrics, COUNT, **labels) == 5
    assert sample(metrics, SUM, **labels) == pytest.approx(7.5065)
    text = metrics.render().decode()
    assert "# TYPE scoreboard_request_duration_seconds histogram" in text
    with pytest.raises(ValueError):
        metrics.request_seconds.labels("only-one-label")
