"""deploy/grafana/scoreboard.json: a Grafana dashboard whose every query is PromQL over
metrics and labels the service really exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.support import (
    GRAFANA,
    analyse,
    grafana_to_promql,
    labels_of,
    query_errors,
    service_series,
    walk_dicts,
)

DASHBOARD: dict[str, Any] = json.loads((GRAFANA / "scoreboard.json").read_text())
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in PANELS for t in p["targets"]]


@pytest.mark.parametrize(("panel", "expr"), targets(), ids=[f"{p}: {e}" for p, e in targets()])
def test_queries_use_real_metrics_and_labels(panel: str, expr: str) -> None:
    assert query_errors(grafana_to_promql(expr)) == []


def test_queries_name_only_registry_metrics() -> None:
    """Every metric a panel draws is one ``server.support.metrics.Metrics()`` registers."""
    used = set().union(*(analyse(grafana_to_promql(e)).metrics for _, e in targets()))
    assert used <= set(service_series())


def test_panels_cover_the_service() -> None:
    used = set().union(*(analyse(grafana_to_promql(e)).metrics for _, e in targets()))
    assert {
        "scoreboard_updates_total",
        "scoreboard_request_duration_seconds_bucket",
        "scoreboard_websocket_connections",
        "scoreboard_broadcast_duration_seconds_bucket",
        "scoreboard_ws_messages_total",
        "scoreboard_change_stream_lag_seconds",
        "scoreboard_change_stream_restarts_total",
        "scoreboard_user_actors",
        "scoreboard_mailbox_depth",
    } <= used
    latency = [e for _, e in targets() if "scoreboard_request_duration_seconds_bucket" in e]
    assert {e.split(",")[0] for e in latency} == {
        f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")
    }


def test_every_query_goes_to_the_prometheus_variable() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for node in walk_dicts(DASHBOARD["panels"]):
        if "datasource" in node:
            assert node["datasource"] == DATASOURCE, node
    for panel in PANELS:
        assert panel["datasource"] == DATASOURCE
        assert panel["targets"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"])
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert match[2] in labels_of(match[1]), variable["definition"]


def test_layout_is_sound() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    refs = [[t["refId"] for t in p["targets"]] for p in PANELS]
    assert all(len(r) == len(set(r)) for r in refs)
    assert DASHBOARD["uid"] == "scoreboard"
