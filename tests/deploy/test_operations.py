"""deploy/kubernetes as it runs: Prometheus finds the pods (annotations, or the ServiceMonitor
component), and the README says who the NetworkPolicy lets in.

The ServiceMonitor (a Prometheus Operator custom resource, which kubernetes-validate has no schema
for) is checked field by field against prometheus-operator's Go API types
(pkg/apis/monitoring/v1/servicemonitor_types.go and types.go, `Endpoint` and `NamespaceSelector`,
at commit 6adcebc5).
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from graphgen_protos import model_config_pb2 as mc
from graphgen_server.app import LIVE
from graphgen_server.config import ServerConfig
from graphgen_server.core import providers
from graphgen_server.core.cpus import cgroup_cpu_quota, threads_per_instance
from graphgen_server.core.instances import plan_instances
from graphgen_server.core.providers import ProviderChoice
from tests.support.manifests import (
    KSERVE,
    KUBECTL,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    needs_kubectl,
    one,
    pod_template,
    render_overlay,
    render_with_components,
    server_container,
    server_flags,
)

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
METRICS_PATH = "/metrics"  # the path graphgen-server's metrics port serves (README: HTTP/REST and metrics)
SERVICE_MONITOR_SPEC = {
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "endpoints",
    "selector",
    "namespaceSelector",
    "sampleLimit",
    "scrapeProtocols",
    "targetLimit",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "keepDroppedTargets",
    "attachMetadata",
    "scrapeClass",
    "bodySizeLimit",
}
SERVICE_MONITOR_ENDPOINT = {
    "port",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "metricRelabelings",
    "relabelings",
    "filterRunning",
    "bearerTokenFile",
    "tlsConfig",
    "authorization",
    "basicAuth",
    "oauth2",
    "bearerTokenSecret",
    "followRedirects",
    "enableHttp2",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed: kustomize overlays not rendered")
    return request.param, render_overlay(request.param)


# -- probes and connections -----------------------------------------------------------------------
def test_liveness_asks_whether_the_process_works_readiness_whether_a_model_serves(rendered):
    _, objects = rendered
    server = server_container(objects)
    services = {probe: server[probe]["grpc"].get("service", "") for probe in PROBES}
    # A pod whose models fail to load must pass its startup and stay alive (out of the Service).
    assert services == {"startupProbe": LIVE, "livenessProbe": LIVE, "readinessProbe": ""}


@needs_kubectl
def test_with_tls_the_https_probes_keep_live_apart_from_ready(tmp_path):
    server = server_container(render_with_components(tmp_path, "gpu", ("tls",)))
    paths = {probe: server[probe]["httpGet"]["path"] for probe in PROBES}
    assert paths == {
        "startupProbe": "/v2/health/live",
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
    }


def test_grpc_connections_age_so_clients_spread_over_new_replicas(rendered):
    _, objects = rendered
    flags = server_flags(server_container(objects)["args"])
    assert 0 < flags.max_connection_age <= 600  # every client reconsiders its replica within minutes
    assert flags.max_connection_age_grace is None  # calls in flight on an old connection finish
    runtime = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())
    assert server_flags(runtime["spec"]["containers"][0]["args"]).max_connection_age == flags.max_connection_age


# -- CPU ------------------------------------------------------------------------------------------
def _cpu_quantity(text: str) -> float:
    """A Kubernetes CPU quantity: "4", "0.5" or "3500m"."""
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _container_cgroup(tmp_path: Path, cpus: float) -> Path:
    """/proc/self of a process in the cgroup (v2, its own namespace) the kubelet makes for a CPU limit:
    cpu.max allows ``cpus`` × 100 ms per 100 ms period."""
    mount = tmp_path / "sys" / "fs" / "cgroup"
    mount.mkdir(parents=True)
    (mount / "cpu.max").write_text(f"{round(cpus * 100_000)} 100000\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(f"30 23 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n")
    (proc / "cgroup").write_text("0::/\n")
    return proc


def test_threads_times_instances_fit_the_cpu_limit(rendered, tmp_path):
    """The server's own derivation (the quota read from the cgroup, the instances planned for the model
    the pod builds, which has no config.pbtxt) under the CPU limit the manifest sets."""
    overlay, objects = rendered
    server = server_container(objects)
    flags = server_flags(server["args"])
    limit = _cpu_quantity(server["resources"]["limits"]["cpu"])
    quota = cgroup_cpu_quota(_container_cgroup(tmp_path, limit))
    assert quota == limit
    choice = ProviderChoice([providers.CUDA, providers.CPU] if flags.device == "cuda" else [providers.CPU], "")
    settings = ServerConfig(repository=flags.repository, device=flags.device)
    instances = len(plan_instances("efficientnet_lite0", mc.ModelConfig(), settings, choice).groups)
    threads = flags.intra_op_threads or threads_per_instance(quota, instances)
    assert (overlay, instances) in {("cpu", 2), ("gpu", 1)}  # Triton's defaults: two on CPU, one per GPU
    assert threads * instances <= limit, (threads, instances, limit)
    assert threads * instances > limit / 2  # and the limit is used, not left idle
    assert _cpu_quantity(server["resources"]["requests"]["cpu"]) == limit  # the CPUs are there, not only allowed


# -- Prometheus -----------------------------------------------------------------------------------
def test_pods_carry_prometheus_scrape_annotations_for_the_metrics_port(rendered):
    _, objects = rendered
    annotations = pod_template(objects)["metadata"]["annotations"]
    server = server_container(objects)
    flags = server_flags(server["args"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(flags.metrics_port)
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert {"name": "metrics", "containerPort": flags.metrics_port} in server["ports"]
    assert "prometheus.io/scheme" not in annotations  # http, Prometheus's default, without TLS


@needs_kubectl
def test_with_tls_prometheus_scrapes_over_https(tmp_path):
    objects = render_with_components(tmp_path, "cpu", ("tls",))
    annotations = pod_template(objects)["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    assert server_flags(server_container(objects)["args"]).tls_cert  # /metrics follows TLS


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_component_scrapes_each_pod_once(tmp_path, overlay):
    objects = render_with_components(tmp_path, overlay, ("service-monitor",))
    for obj in objects:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC, set(spec) - SERVICE_MONITOR_SPEC
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT, set(endpoint) - SERVICE_MONITOR_ENDPOINT
    assert endpoint["path"] == METRICS_PATH and endpoint["scheme"] == "http"
    # The Services it selects, and among them those with the endpoint's port: the one Service whose
    # port reaches the server's metrics port (the headless Service for clients has no such port).
    wanted = spec["selector"]["matchLabels"].items()
    selected = [o for o in objects if o["kind"] == "Service" and wanted <= o["metadata"]["labels"].items()]
    scraped = [s for s in selected if any(p["name"] == endpoint["port"] for p in s["spec"]["ports"])]
    assert len(selected) == 2 and [s["metadata"]["name"] for s in scraped] == ["graphgen-server"]
    (port,) = [p for p in scraped[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    flags = server_flags(server_container(objects)["args"])
    container_ports = {p["name"]: p["containerPort"] for p in server_container(objects)["ports"]}
    assert container_ports[port["targetPort"]] == flags.metrics_port
    # Discovery by annotation turned off: a Prometheus honouring both would scrape every pod twice.
    assert pod_template(objects)["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


# -- NetworkPolicy --------------------------------------------------------------------------------
def test_readme_says_who_the_network_policy_admits(rendered):
    _, objects = rendered
    policy = one(objects, "NetworkPolicy")["spec"]
    readme = (REPO / "README.md").read_text()
    clients, monitoring = policy["ingress"]
    ((label, value),) = clients["from"][0]["podSelector"]["matchLabels"].items()
    assert f'`{label}: "{value}"`' in readme
    namespace = monitoring["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert f"namespace `{namespace}`" in readme
    assert policy["egress"] == [] and "no egress" in readme


# -- KServe ---------------------------------------------------------------------------------------
def test_kserve_runtime_probes_live_apart_from_ready():
    runtime = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    flags = server_flags(container["args"])
    paths = {
        probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": "/v2/health/live",  # a model that fails to load must not fail the start
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
    }
    assert {container[probe]["httpGet"]["port"] for probe in paths} == {flags.http_port}
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # model loading
    grace = isvc["spec"]["predictor"]["terminationGracePeriodSeconds"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > grace  # a stopping pod is not killed
