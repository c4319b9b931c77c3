"""Every series the alerts select exists, at zero, in a server that has just started.

``increase()`` over a counter whose series is born with its first event misses that
event: the first history loss or the first ``database_error`` of a pod would never
alert. So each ``metric{label="value"}`` (and each value of a ``label=~"a|b"``) the
PrometheusRule selects on a service metric must be in a fresh server's ``/metrics``.
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import scaled, serving
from tests.deploy.support import (
    K8S,
    TARGET_LABELS,
    analyse,
    regex_alternatives,
    service_series,
)

RULES = K8S / "monitoring" / "prometheusrule.yaml"


def alert_expressions() -> list[str]:
    body = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in body["spec"]["groups"] for rule in group["rules"]]


def selected_series() -> tuple[set[str], set[tuple[str, str, str]]]:
    """The service metrics the alerts use, and each (metric, label, pattern) they select:
    a value, each value of a ``=~`` alternation, or another ``=~`` regex whole."""
    metrics: set[str] = set()
    selected: set[tuple[str, str, str]] = set()
    for expr in alert_expressions():
        query = analyse(expr)
        metrics |= {m for m in query.metrics if m in service_series()}
        for metric, label, op, value in query.matchers:
            if metric not in service_series() or label in TARGET_LABELS:
                continue
            if op == promql_parser.MatchOp.Equal:
                values = [value]
            elif op == promql_parser.MatchOp.Re:
                values = regex_alternatives(value) or [value]  # "5..": one pattern
            else:
                continue  # != and !~ select no particular series
            selected.update((metric, label, v) for v in values)
    return metrics, selected


def test_the_alerts_select_labelled_series() -> None:
    metrics, selected = selected_series()
    assert {"scoreboard_updates_total", "scoreboard_change_stream_restarts_total"} <= metrics
    assert ("scoreboard_change_stream_restarts_total", "reason", "history_lost") in selected
    assert ("scoreboard_updates_total", "outcome", "database_error") in selected
    assert ("scoreboard_http_responses_total", "status", "5..") in selected


@pytest.mark.gen_test(timeout=scaled(20))
async def test_every_series_an_alert_selects_is_there_at_zero_from_start() -> None:
    # With a JWKS issuer, as the identity alerts need (nothing listens at port 1: its
    # fetches fail, which does not matter here).
    jwks = {
        "jwt_secret": None,
        "jwt_jwks_url": "http://127.0.0.1:1/jwks.json",
        "jwt_issuer": "https://idp.example/",
        "jwt_algorithms": ("RS256",),
    }
    async with serving(**jwks) as client:
        response = await client.request("GET", "/metrics")
    assert response.code == 200
    samples: dict[str, list[dict[str, Any]]] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    metrics, selected = selected_series()
    missing = sorted(m for m in metrics if m not in samples)
    missing += sorted(
        f'{metric}{{{label}=~"{pattern}"}}'
        for metric, label, pattern in selected
        if not any(
            re.fullmatch(pattern, labels.get(label, "")) for labels in samples.get(metric, [])
        )
    )
    assert not missing, f"series the alerts use that a fresh server lacks: {missing}"
