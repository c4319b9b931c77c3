"""What the deploy tests check against: the manifests as kustomize would assemble them, the
service's own metrics, routes and settings, and a PromQL reader.

There is no kustomize binary here: :func:`load_kustomization` follows ``resources:`` the
way ``kustomize build`` does for the subset the manifests use (files and directories, a
``namespace``), and refuses any other kustomization field so the model cannot silently
drift from what kustomize would build.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import promql_parser
import yaml
from prometheus_client.metrics import MetricWrapperBase

from handlers.base import _STATUS_CODES
from handlers.errors import HTTP_ANSWERS
from handlers.inflight import InFlight
from server.app import make_app
from server.settings import OPTIONS, Settings
from server.store.changes import RESTART_REASONS
from server.support.metrics import FETCH_OUTCOMES, REFUSAL_REASONS, LoopHistogram, Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
GRAFANA = ROOT / "deploy" / "grafana"
DOCKERFILE = ROOT / "Dockerfile"

# The Kubernetes version whose schemas the manifests are validated against.
KUBERNETES_VERSION = "1.30"

KUSTOMIZATION = "kustomization.yaml"
KUSTOMIZATION_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace"})


@dataclass(frozen=True)
class Resource:
    """One YAML document of the build: where it came from and its body."""

    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.path.relative_to(ROOT)})"


@dataclass
class Build:
    """What ``kustomize build`` of a directory is made of."""

    resources: list[Resource] = field(default_factory=list)
    kustomizations: list[Path] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [r.body for r in self.resources if r.kind == kind and r.name == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]


def load_kustomization(directory: Path, namespace: str | None = None) -> Build:
    """The resources ``kustomize build directory`` would emit, with their namespace set."""
    path = directory / KUSTOMIZATION
    spec = yaml.safe_load(path.read_text())
    unsupported = set(spec) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{path}: fields the tests do not model: {sorted(unsupported)}"
    assert spec.get("kind") == "Kustomization", path
    # An outer kustomization's namespace wins, as in kustomize.
    namespace = namespace or spec.get("namespace")
    build = Build(kustomizations=[path])
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        assert target.is_relative_to(directory), f"{path}: {entry} is outside {directory}"
        if target.is_dir():
            inner = load_kustomization(target, namespace)
            build.resources += inner.resources
            build.kustomizations += inner.kustomizations
        else:
            assert target.is_file(), f"{path}: {entry} does not exist"
            for body in yaml.safe_load_all(target.read_text()):
                if body is None:
                    continue
                if namespace and body["kind"] != "Namespace":
                    body["metadata"]["namespace"] = namespace
                build.resources.append(Resource(target, body))
    return build


@cache
def k8s_build() -> Build:
    return load_kustomization(K8S)


# --- the service: settings, routes, metrics ---------------------------------------------

SETTING_ENVS = frozenset(option.env for option in OPTIONS)


def setting_default(env: str) -> Any:
    (option,) = [o for o in OPTIONS if o.env == env]
    return getattr(Settings(), option.field)


@cache
def routes() -> dict[str, str]:
    """Route pattern -> its metrics ``route`` label, from the real application."""
    app = make_app(SimpleNamespace(settings=Settings(), board_runtime=None), InFlight())  # type: ignore[arg-type]
    table = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.rstrip("$")  # type: ignore[attr-defined]
        table[pattern] = rule.target_kwargs.get("route", "")
    return table


def is_route(path: str) -> bool:
    return any(re.fullmatch(pattern, path) for pattern in routes())


# Labels Prometheus adds to every series scraped through a ServiceMonitor.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
)

# Series from outside the service the alerts use: Prometheus itself and kube-state-metrics.
EXTERNAL_SERIES: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "kube_pod_status_ready": frozenset({"pod", "uid", "condition"}),
    "kube_horizontalpodautoscaler_status_current_replicas": frozenset({"horizontalpodautoscaler"}),
    "kube_horizontalpodautoscaler_spec_max_replicas": frozenset({"horizontalpodautoscaler"}),
}


@dataclass(frozen=True)
class Series:
    """One series name the service exposes: its metric type and label names."""

    name: str
    type: str  # "counter", "gauge", "histogram" (for its _bucket/_sum/_count series)
    labels: frozenset[str]
    documentation: str

    @property
    def is_counter(self) -> bool:
        """Whether rate() and increase() apply (counters and a histogram's series)."""
        return self.type in {"counter", "histogram"}


@cache
def service_series() -> dict[str, Series]:
    """Every series name ``server.support.metrics.Metrics``' registry exposes."""
    metrics = Metrics()
    # The registry lists every family even before it has a sample; label names are only
    # known to the collectors themselves.
    label_names = {
        collector._name: tuple(collector._labelnames)  # type: ignore[attr-defined]
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase | LoopHistogram)
    }
    series: dict[str, Series] = {}
    for family in metrics.registry.collect():
        if family.name in label_names:
            labels = frozenset(label_names[family.name])
        else:  # a custom collector (the GC's): its samples name their labels
            labels = frozenset(label for s in family.samples for label in s.labels)
        if family.type == "counter":
            names = {f"{family.name}_total": labels}
        elif family.type == "histogram":
            names = {
                f"{family.name}_bucket": labels | {"le"},
                f"{family.name}_sum": labels,
                f"{family.name}_count": labels,
            }
        else:
            names = {family.name: labels}
        for name, names_labels in names.items():
            series[name] = Series(name, family.type, names_labels, family.documentation)
    return series


def labels_of(metric: str) -> frozenset[str]:
    if metric in service_series():
        return service_series()[metric].labels | TARGET_LABELS
    return EXTERNAL_SERIES[metric] | TARGET_LABELS


# Label values the service can produce, for the labels the alerts and panels filter on.
_API_ERROR = re.compile(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"')


@cache
def outcome_values() -> frozenset[str]:
    """``scoreboard_updates_total``'s outcomes: every API error code, applied, replayed."""
    # _STATUS_CODES: the codes of errors Tornado raises itself; HTTP_ANSWERS: those of
    # the domain errors and the store and actor failures.
    codes = {"applied", "replayed", *_STATUS_CODES.values(), *HTTP_ANSWERS}
    for package in ("handlers", "server"):
        for source in (ROOT / package).rglob("*.py"):
            codes.update(_API_ERROR.findall(source.read_text()))
    return frozenset(codes)


def known_label_values() -> dict[str, frozenset[str]]:
    return {
        "route": frozenset(routes().values()),
        # One set per label name, whatever the metric: updates' and JWKS fetches' outcomes,
        # change stream restarts' and token refusals' reasons.
        "outcome": outcome_values() | frozenset(FETCH_OUTCOMES),
        "reason": frozenset(RESTART_REASONS) | frozenset(REFUSAL_REASONS),
    }


# --- PromQL ------------------------------------------------------------------------------


@dataclass
class Query:
    """What a PromQL expression refers to."""

    metrics: set[str] = field(default_factory=set)
    # (metric, label, op, value); op is a promql_parser.MatchOp
    matchers: list[tuple[str, str, Any, str]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def grafana_to_promql(expr: str) -> str:
    """A Grafana query with its variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return _GRAFANA_VARIABLE.sub("scoreboard", expr)


def _selectors(expr: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def analyse(text: str) -> Query:
    """Parse ``text`` (ValueError when it is not PromQL) and list what it refers to.

    ``problems`` notes misuse: rate()/increase() over a gauge, histogram_quantile() over
    something else than buckets aggregated by ``le``.
    """
    expr = promql_parser.parse(text)
    query = Query()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or ""
            query.metrics.add(name)
            alternatives = [m for group in node.matchers.or_matchers for m in group]
            for matcher in [*node.matchers.matchers, *alternatives]:
                if matcher.name != "__name__":
                    query.matchers.append((name, matcher.name, matcher.op, matcher.value))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            query.grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                query.grouping.update(node.modifier.matching.labels)
            query.grouping.update(node.modifier.group_labels or [])
        elif isinstance(node, promql_parser.Call):
            _check_call(node, query)

    promql_parser.walk(expr, visit)
    return query


def _check_call(node: Any, query: Query) -> None:
    name = node.func.name
    if name in {"rate", "irate", "increase"}:
        for selector in _selectors(node):
            series = service_series().get(selector.name)
            if series is not None and not series.is_counter:
                query.problems.append(f"{name}() over the gauge {selector.name}")
    if name == "histogram_quantile":
        inner = node.args[1]
        for selector in _selectors(inner):
            if not selector.name.endswith("_bucket"):
                query.problems.append(f"histogram_quantile() over {selector.name}")
        if isinstance(inner, promql_parser.AggregateExpr) and (
            inner.modifier is None or "le" not in inner.modifier.labels
        ):
            query.problems.append("histogram_quantile() over buckets not grouped by le")


def regex_alternatives(value: str) -> list[str] | None:
    """The literal values a ``=~`` regex is a plain alternation of (None: not one)."""
    if re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", value):
        return value.split("|")
    return None


def query_errors(text: str) -> list[str]:
    """Everything wrong with one PromQL expression, as messages (empty: fine)."""
    try:
        query = analyse(text)
    except ValueError as exc:
        return [f"not PromQL: {exc}"]
    errors = list(query.problems)
    everywhere: set[str] = set()
    for metric in query.metrics:
        if metric not in service_series() and metric not in EXTERNAL_SERIES:
            errors.append(f"unknown metric {metric}")
            continue
        everywhere |= labels_of(metric)
    known_values = known_label_values()
    for metric, label, op, value in query.matchers:
        known = metric in service_series() or metric in EXTERNAL_SERIES
        if known and label not in labels_of(metric):
            errors.append(f"{metric} has no label {label}")
            continue
        if label in known_values and metric in service_series():
            literal = op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual)
            values = [value] if literal else regex_alternatives(value)
            for item in values or []:
                if item not in known_values[label]:
                    errors.append(f"{label}={item!r} is never produced")
    errors += [
        f"grouping by unknown label {label}" for label in query.grouping - everywhere - {"le"}
    ]
    return errors


def walk_dicts(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside ``node`` (itself included), depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_dicts(item)


def pod_specs(build: Build) -> Iterator[tuple[Resource, dict[str, Any]]]:
    """Each workload with the pod spec of its template."""
    for resource in build.resources:
        if resource.kind in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            yield resource, resource.body["spec"]["template"]["spec"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a ``matchLabels`` selector (no expressions here) selects ``labels``."""
    assert set(selector) <= {"matchLabels"}, "matchExpressions are not modelled"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def kept_labels(text: str) -> frozenset[str]:
    """The labels the result of a PromQL expression carries (what alert templates can use)."""
    return _kept(promql_parser.parse(text))


def _kept(node: Any) -> frozenset[str]:
    p = promql_parser
    if isinstance(node, p.VectorSelector):
        return labels_of(node.name) if node.name else frozenset()
    if isinstance(node, p.MatrixSelector):
        return _kept(node.vector_selector)
    if isinstance(node, p.ParenExpr | p.UnaryExpr | p.SubqueryExpr):
        return _kept(node.expr)
    if isinstance(node, p.AggregateExpr):
        if node.modifier is None:
            return frozenset()
        labels = frozenset(node.modifier.labels)
        by = node.modifier.type == p.AggModifierType.By
        return labels if by else _kept(node.expr) - labels
    if isinstance(node, p.Call):
        vectors = [_kept(arg) for arg in node.args if isinstance(arg, p.Expr)]
        kept = frozenset().union(*vectors)
        return kept - {"le"} if node.func.name == "histogram_quantile" else kept
    if isinstance(node, p.BinaryExpr):
        lhs, rhs = _kept(node.lhs), _kept(node.rhs)
        return lhs or rhs
    return frozenset()
