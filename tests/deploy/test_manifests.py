"""deploy/k8s: every manifest is valid Kubernetes, and agrees with the service and itself.

Core kinds are validated against the Kubernetes OpenAPI schemas (strict: unknown fields are
errors) that kubernetes-validate ships, offline. The prometheus-operator kinds have no
schema there; the only packaged models of them (pydantic, cloudcoil) accept unknown fields
and bring a Kubernetes client along. So they are checked against the subset of their CRD
schema the manifests use (written here, closed to unknown fields) and by what they mean:
the ServiceMonitor scrapes the Service's port and a real route, and every PromQL
expression parses and names metrics, labels and label values the service produces.
"""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from server.settings import SettingsError, load_settings
from tests.deploy.support import (
    K8S,
    KUBERNETES_VERSION,
    KUSTOMIZATION,
    SETTING_ENVS,
    Resource,
    analyse,
    containers,
    is_route,
    k8s_build,
    kept_labels,
    labels_match,
    pod_specs,
    query_errors,
    service_series,
    setting_default,
    walk_dicts,
)

build = k8s_build()
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Files under deploy/k8s that are not resources: kustomize must not apply them.
NOT_RESOURCES = {K8S / "prometheus-adapter" / "values.yaml"}


def resource_id(resource: Resource) -> str:
    return f"{resource.kind}/{resource.name}"


# --- the kustomization -------------------------------------------------------------------


def test_every_file_is_part_of_the_build() -> None:
    listed = {r.path for r in build.resources} | set(build.kustomizations) | NOT_RESOURCES
    on_disk = {p for p in K8S.rglob("*") if p.is_file()}
    assert on_disk - listed == set(), "files no kustomization.yaml lists"
    assert all(p.exists() for p in NOT_RESOURCES)


def test_every_kustomization_directory_is_reached() -> None:
    directories = {p.parent for p in K8S.rglob(KUSTOMIZATION)}
    assert directories == {p.parent for p in build.kustomizations}


def test_resources_are_unique_and_namespaced() -> None:
    ids = [resource_id(r) for r in build.resources]
    assert len(ids) == len(set(ids)), "two resources of one kind share a name"
    (namespace,) = build.of_kind("Namespace")
    for resource in build.resources:
        if resource.kind != "Namespace":
            assert resource.body["metadata"]["namespace"] == namespace.name, resource


@pytest.mark.parametrize(
    "resource", [r for r in build.resources if r.kind not in CRD_KINDS], ids=resource_id
)
def test_core_resources_match_the_kubernetes_schema(resource: Resource) -> None:
    try:
        kubernetes_validate.validate(resource.body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{resource}: {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{resource}: {exc.message}")


def test_validation_notices_a_broken_manifest() -> None:
    """The check above is not vacuous: a misspelt field and a wrong type are refused."""
    deployment = yaml.safe_load((K8S / "app" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = yaml.safe_load((K8S / "app" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- the prometheus-operator resources ---------------------------------------------------

# Prometheus durations, as the CRDs define them.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}


def crd_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


SERVICE_MONITOR = crd_schema(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": STRING_MAP},
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                    },
                },
            },
        },
    },
)
PROMETHEUS_RULE = crd_schema(
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "rules": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "additionalProperties": False,
                                "properties": {
                                    "alert": {"type": "string", "pattern": "^[A-Za-z]\\w*$"},
                                    "record": {"type": "string"},
                                    "expr": {"type": "string"},
                                    "for": DURATION,
                                    "keep_firing_for": DURATION,
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


@pytest.mark.parametrize(
    "resource", [r for r in build.resources if r.kind in CRD_KINDS], ids=resource_id
)
def test_operator_resources_match_their_crd(resource: Resource) -> None:
    jsonschema.validate(resource.body, CRD_SCHEMAS[resource.kind])


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    (monitor,) = build.of_kind("ServiceMonitor")
    spec = monitor.body["spec"]
    services = [
        s.body
        for s in build.of_kind("Service")
        if labels_match(spec["selector"], s.body["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in services] == ["scoreboard"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert is_route(endpoint["path"])


def rules() -> list[dict[str, Any]]:
    (rule,) = build.of_kind("PrometheusRule")
    return [r for group in rule.body["spec"]["groups"] for r in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_alert_expressions_use_real_metrics_and_labels(rule: dict[str, Any]) -> None:
    assert query_errors(rule["expr"]) == []
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    for text in rule["annotations"].values():
        # Alert templates may only use labels the expression's result keeps.
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in kept_labels(rule["expr"]), (rule["alert"], label)


def test_alerts_cover_what_issue_5_asks_for() -> None:
    used = set().union(*(analyse(r["expr"]).metrics for r in rules()))
    assert {
        "scoreboard_updates_total",
        "scoreboard_request_duration_seconds_bucket",
        "scoreboard_change_stream_lag_seconds",
        "scoreboard_change_stream_restarts_total",
        "scoreboard_change_stream_watching",
        "kube_pod_status_ready",
    } <= used
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("rate(scoreboard_updates[5m])", "unknown metric scoreboard_updates"),
        ('scoreboard_updates_total{status="500"}', "has no label status"),
        ('scoreboard_updates_total{outcome="db_error"}', "'db_error' is never produced"),
        ('scoreboard_request_duration_seconds_count{route="update"}', "'update' is never"),
        ("rate(scoreboard_websocket_connections[5m])", "rate() over the gauge"),
        (
            "histogram_quantile(0.9, sum(rate(scoreboard_request_duration_seconds_bucket[5m])))",
            "not grouped by le",
        ),
        ("sum by (pod (scoreboard_user_actors)", "not PromQL"),
        ("sum by (shard) (scoreboard_user_actors)", "grouping by unknown label shard"),
    ],
)
def test_expression_checks_catch_mistakes(expr: str, error: str) -> None:
    assert any(error in message for message in query_errors(expr)), query_errors(expr)


# --- the application's Deployment ----------------------------------------------------------

deployment = build.get("Deployment", "scoreboard")
pod = deployment["spec"]["template"]["spec"]
(app,) = pod["containers"]
config = build.get("ConfigMap", "scoreboard")["data"]
secret = build.get("Secret", "scoreboard")["stringData"]


def configured(env: str) -> str:
    """A setting's value in the pod: the ConfigMap's, else the server's default."""
    return config.get(env, str(setting_default(env)))


def test_environment_names_are_real_settings() -> None:
    names = set(config) | set(secret) | {e["name"] for e in app.get("env", [])}
    assert names - SETTING_ENVS == set()
    assert {"SCOREBOARD_JWT_SECRET", "SCOREBOARD_MONGODB_URI"} <= set(secret)
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in app["envFrom"]} == {
        "scoreboard"
    }


def test_the_settings_load_and_the_placeholder_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="SCOREBOARD_JWT_SECRET"):
        load_settings([], {**config, **secret})
    real_key = {"SCOREBOARD_JWT_SECRET": "k" * 48}
    settings = load_settings([], {**config, **secret, **real_key})
    assert settings.uses_mongodb
    assert settings.host == "0.0.0.0"


def test_service_links_cannot_shadow_settings() -> None:
    """A Service named scoreboard would inject SCOREBOARD_PORT=tcp://... into the pods."""
    for _, spec in pod_specs(build):
        assert spec.get("enableServiceLinks") is False


def test_container_port_is_the_configured_port() -> None:
    (port,) = app["ports"]
    assert port["containerPort"] == int(configured("SCOREBOARD_PORT"))
    assert port["name"] == "http"


def test_probes_hit_real_routes() -> None:
    probes = {kind: app[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = app[kind]["httpGet"]
        assert is_route(probe["path"]), kind
        assert probe["port"] in {p["name"] for p in app["ports"]}


def prestop_seconds(container: dict[str, Any]) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    if command[0] == "sleep":
        return float(command[1])
    match = re.search(r"time\.sleep\(([\d.]+)\)", shlex.join(command))
    assert match, f"preStop is neither sleep nor time.sleep: {command}"
    return float(match.group(1))


def test_grace_period_outlasts_prestop_and_the_shutdown_timeout() -> None:
    shutdown = float(configured("SCOREBOARD_SHUTDOWN_TIMEOUT_S"))
    assert prestop_seconds(app) >= 3  # time for the endpoints to drop the pod
    assert pod["terminationGracePeriodSeconds"] > prestop_seconds(app) + shutdown


def test_replicas_are_left_to_the_autoscaler() -> None:
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- pods in general -----------------------------------------------------------------------


def workload_ids() -> list[str]:
    return [resource_id(w) for w, _ in pod_specs(build)]


@pytest.mark.parametrize(("workload", "spec"), list(pod_specs(build)), ids=workload_ids())
def test_pods_meet_the_restricted_pod_security_standard(
    workload: Resource, spec: dict[str, Any]
) -> None:
    pod_security = spec.get("securityContext", {})
    assert pod_security["runAsNonRoot"] is True, workload
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec.get("automountServiceAccountToken") is False
    for container in containers(spec):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert "privileged" not in security
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    allowed = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected"}
    for volume in volumes.values():
        assert set(volume) - {"name"} <= allowed, volume
    templates = {
        t["metadata"]["name"] for t in workload.body["spec"].get("volumeClaimTemplates", [])
    }
    for container in containers(spec):
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes.keys() | templates, mount


def test_references_to_secrets_and_config_maps_exist() -> None:
    stores = {
        kind: {
            r.name: {**r.body.get("data", {}), **r.body.get("stringData", {})}
            for r in build.of_kind(kind)
        }
        for kind in ("Secret", "ConfigMap")
    }
    for workload, spec in pod_specs(build):
        for node in walk_dicts(spec):
            for ref_kind, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if ref_kind in node:
                    ref = node[ref_kind]
                    assert ref["key"] in stores[kind][ref["name"]], (workload, ref)
            for ref_kind, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if ref_kind in node:
                    assert node[ref_kind]["name"] in stores[kind], (workload, node)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                data = stores["Secret"][volume["secret"]["secretName"]]
                assert {i["key"] for i in volume["secret"].get("items", [])} <= set(data)


def test_services_select_pods_and_name_their_ports() -> None:
    for service in build.of_kind("Service"):
        spec = service.body["spec"]
        selected = [
            (w, s)
            for w, s in pod_specs(build)
            if w.kind != "Job"
            and labels_match(
                {"matchLabels": spec["selector"]}, w.body["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert len(selected) == 1, service
        port_names = {
            p.get("name") for c in selected[0][1]["containers"] for p in c.get("ports", [])
        }
        for port in spec["ports"]:
            assert port["targetPort"] in port_names, (service, port)


def test_disruption_budgets_select_exactly_one_workload() -> None:
    for budget in build.of_kind("PodDisruptionBudget"):
        selector = budget.body["spec"]["selector"]
        selected = [
            w
            for w, _ in pod_specs(build)
            if labels_match(selector, w.body["spec"]["template"]["metadata"]["labels"])
        ]
        assert [w.kind for w in selected] in (["Deployment"], ["StatefulSet"]), budget
        assert selected[0].name == budget.name


def test_workload_selectors_match_their_templates() -> None:
    for workload, _ in pod_specs(build):
        if workload.kind != "Job":
            spec = workload.body["spec"]
            assert labels_match(spec["selector"], spec["template"]["metadata"]["labels"])


# --- ingress and autoscaling ---------------------------------------------------------------


def ingress_paths() -> dict[str, dict[str, Any]]:
    """Each path prefix the Ingresses route -> the Ingress that routes it."""
    return {
        path["path"]: ingress.body
        for ingress in build.of_kind("Ingress")
        for rule in ingress.body["spec"]["rules"]
        for path in rule["http"]["paths"]
    }


def timeouts(ingress: dict[str, Any]) -> set[float]:
    annotations = ingress["metadata"]["annotations"]
    return {
        float(annotations[f"nginx.ingress.kubernetes.io/{name}"])
        for name in ("proxy-read-timeout", "proxy-send-timeout")
    }


def test_ingress_routes_the_api_and_the_live_stream_over_tls_only() -> None:
    service = build.get("Service", "scoreboard")
    prefixes = []
    for ingress in build.of_kind("Ingress"):
        spec = ingress.body["spec"]
        tls_hosts = {h for t in spec["tls"] for h in t["hosts"]}
        annotations = ingress.body["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
        for rule in spec["rules"]:
            assert rule["host"] in tls_hosts
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                assert path["pathType"] == "Prefix"
                prefixes.append(path["path"])
    assert len(prefixes) == len(set(prefixes))

    def routed(url: str) -> bool:
        return any(url == p or url.startswith(p.rstrip("/") + "/") for p in prefixes)

    for public in ("/api/update-score", "/api/top-scores", "/ws/scoreboard"):
        assert is_route(public) and routed(public), public
    for internal in ("/metrics", "/healthz", "/readyz"):
        assert is_route(internal) and not routed(internal), internal


def test_only_the_live_stream_gets_the_hour_long_proxy_timeout() -> None:
    """A stuck write must not hold an API request for an hour: the server's own deadline
    (SCOREBOARD_UPDATE_TIMEOUT_S, answered 503 database_timeout) comes first, then the
    ingress's, well before a WebSocket's."""
    paths = ingress_paths()
    assert paths["/api"] is not paths["/ws"], "one Ingress: one timeout for both"
    update_timeout = float(configured("SCOREBOARD_UPDATE_TIMEOUT_S"))
    for timeout in timeouts(paths["/api"]):
        assert update_timeout + 5 <= timeout <= 60, timeout
    ping_interval = float(configured("SCOREBOARD_WS_PING_INTERVAL_S"))
    for timeout in timeouts(paths["/ws"]):
        assert timeout >= 3600 and timeout > ping_interval


def adapter_rules() -> list[dict[str, Any]]:
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    custom: list[dict[str, Any]] = values["rules"]["custom"]
    return custom


def test_autoscaler_targets_the_deployment_on_cpu_and_websockets() -> None:
    (hpa,) = build.of_kind("HorizontalPodAutoscaler")
    spec = hpa.body["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    assert spec["minReplicas"] >= 2  # so the PodDisruptionBudget can let one go
    kinds = {m["type"]: m for m in spec["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert "cpu" in app["resources"]["requests"]  # utilization is relative to it
    metric = kinds["Pods"]["pods"]["metric"]["name"]
    assert metric == "scoreboard_websocket_connections"
    assert service_series()[metric].type == "gauge"
    served = {rule["name"]["as"]: rule for rule in adapter_rules()}
    assert metric in served, "prometheus-adapter does not serve the HPA's metric"
    rule = served[metric]
    assert analyse(rule["seriesQuery"]).metrics == {metric}
    assert re.fullmatch(rule["name"]["matches"], metric)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "<<.Series>>" in rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]


# --- MongoDB -------------------------------------------------------------------------------

mongo = build.get("StatefulSet", "mongo")
mongo_secret = build.get("Secret", "mongo")["stringData"]
init_job = build.get("Job", "mongo-rs-init")


def test_replica_set_members_agree_everywhere() -> None:
    """The StatefulSet's members, the Job's config and the application's URI."""
    spec = mongo["spec"]
    (mongod,) = spec["template"]["spec"]["containers"]
    assert mongod["image"] == "mongo:7.0"
    args = mongod["args"]
    assert args[0] == "mongod"
    assert "--bind_ip_all" in args
    replica_set = args[args.index("--replSet") + 1]
    service = build.get("Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    members = [f"{mongo['metadata']['name']}-{i}.{spec['serviceName']}:27017" for i in range(3)]
    assert spec["replicas"] == len(members) == 3

    (job_container,) = init_job["spec"]["template"]["spec"]["containers"]
    script = job_container["args"][0]
    assert re.findall(r'"([\w.-]+:\d+)"', script) == members
    assert f'_id: "{replica_set}"' in script
    assert f"replicaSet={replica_set}" in script
    assert "replSetGetStatus" in script  # initiates only a set that is not yet initiated
    assert "getUser(appUser) === null" in script

    uri = urlsplit(secret["SCOREBOARD_MONGODB_URI"])
    assert uri.netloc.split("@", 1)[1].split(",") == members
    assert parse_qs(uri.query)["replicaSet"] == [replica_set]
    job_env = {e["name"]: e for e in job_container["env"]}
    assert uri.username == job_env["MONGO_APP_USERNAME"]["value"]
    assert job_env["MONGO_APP_DATABASE"]["value"] == configured("SCOREBOARD_MONGODB_DB")
    assert uri.password == mongo_secret["MONGO_APP_PASSWORD"]


def test_keyfile_placeholder_is_a_valid_keyfile() -> None:
    keyfile = mongo_secret["keyfile"]
    assert re.fullmatch(r"[A-Za-z0-9+/=]{6,1024}", keyfile)
    (mongod,) = mongo["spec"]["template"]["spec"]["containers"]
    path = mongod["args"][mongod["args"].index("--keyFile") + 1]
    mounts = {m["mountPath"] for m in mongod["volumeMounts"]}
    assert path.rsplit("/", 1)[0] in mounts


def test_secrets_are_marked_as_placeholders() -> None:
    for resource in build.of_kind("Secret"):
        assert resource.path.name == "secret.example.yaml", resource
        assert "PLACEHOLDERS" in resource.path.read_text(), resource


def test_the_replica_set_has_an_oplog_sized_for_the_resume_window() -> None:
    """Without --oplogSize, mongod takes 5 % of the disk, which the docs cannot turn into a
    resume window; the window in docs/deploy.md is computed from this size."""
    args = mongo["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--oplogSize" in args
    size_mb = int(args[args.index("--oplogSize") + 1])
    assert size_mb == 2048
    deploy_doc = (K8S.parents[1] / "docs" / "deploy.md").read_text()
    assert "`--oplogSize 2048`" in deploy_doc
