"""deploy/: the Kubernetes objects validate, both overlays render, the flags are the server's own,
the Dockerfile and the manifests agree, and the KServe objects use only KServe's API fields.

Kubernetes objects are validated by kubernetes-validate (strict: unknown fields are errors)
against Kubernetes 1.32. The KServe objects (custom resources, which it has no schema for) are
checked field by field against tables taken from KServe's Go API types (kserve/kserve,
pkg/apis/serving/v1alpha1/servingruntime_types.go, v1beta1/{inference_service,predictor,
predictor_model,component,podspec}.go at commit 0217bdab), their embedded Kubernetes containers
and volumes by kubernetes-validate again.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support.manifests import (
    KSERVE,
    KUBECTL,
    KUBERNETES,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    needs_kubectl,
    one,
    render_overlay,
    render_with_components,
    server_container,
    server_flags,
)

COMPONENTS = ("tls", "model-pvc")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed: kustomize overlays not rendered")
    return request.param, render_overlay(request.param)


# -- Kubernetes ---------------------------------------------------------------------------------
def test_every_object_of_both_overlays_validates(rendered):
    _, objects = rendered
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Deployment", "Service", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"]
    )
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_components_render_and_validate(tmp_path, overlay):
    objects = render_with_components(tmp_path, overlay, COMPONENTS)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    flags = server_flags(server_container(objects)["args"])
    mounts = {m["name"]: m for m in server_container(objects)["volumeMounts"]}
    # TLS: the files the flags name are in the Secret's read-only mount; probes over HTTPS.
    assert mounts["tls"]["readOnly"] and str(flags.tls_cert).startswith(mounts["tls"]["mountPath"] + "/")
    assert str(flags.tls_key).startswith(mounts["tls"]["mountPath"] + "/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = server_container(objects)[probe]["httpGet"]
        assert http["scheme"] == "HTTPS" and http["port"] == flags.http_port and http["path"].startswith("/v2/health/")
    # Models from the PVC, read-only; no build step left.
    assert "initContainers" not in pod
    (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert models["persistentVolumeClaim"] == {"claimName": "graphgen-models", "readOnly": True}
    assert one(objects, "PersistentVolumeClaim", "graphgen-models")


def test_gpu_limit_only_in_the_gpu_overlay(rendered):
    overlay, objects = rendered
    limits = server_container(objects)["resources"]["limits"]
    flags = server_flags(server_container(objects)["args"])
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == "1" and flags.device == "cuda"
    else:
        assert not any("gpu" in key for key in limits) and flags.device == "cpu"


def test_flags_ports_and_paths_agree(rendered):
    _, objects = rendered
    server = server_container(objects)
    flags = server_flags(server["args"])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": flags.port, "http": flags.http_port, "metrics": flags.metrics_port}
    assert (flags.port, flags.http_port, flags.metrics_port) == (8001, 8000, 8002)  # Triton's
    assert flags.host == "0.0.0.0"
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts[str(flags.repository)]["readOnly"]
    token_mount = next(m for m in server["volumeMounts"] if m["name"] == "token")
    assert token_mount["readOnly"] and str(flags.token_file).startswith(token_mount["mountPath"] + "/")
    for service in (o for o in objects if o["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"]  # the same numbers outside and in
    # Native gRPC probes on the gRPC port (grpc.health.v1), a startup budget for model loading.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == flags.port
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_termination_grace_covers_the_server_s_stop(rendered):
    _, objects = rendered
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = server_container(objects)
    flags = server_flags(server["args"])
    pre_stop_hook = server.get("lifecycle", {}).get("preStop", {})
    hook_s = pre_stop_hook.get("sleep", {}).get("seconds", 0)
    assert not pre_stop_hook or "sleep" in pre_stop_hook, "a preStop hook other than sleep cannot be budgeted"
    assert flags.pre_stop_delay > 0 and flags.grace > 0
    # preStop (if any) + the server's NOT_SERVING delay + its drain + a second to close.
    assert pod["terminationGracePeriodSeconds"] >= hook_s + flags.pre_stop_delay + flags.grace + 1
    # Liveness must not kill a pod that is stopping (its health says NOT_SERVING meanwhile).
    liveness = server["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > pod["terminationGracePeriodSeconds"]
    # Readiness drops the pod within the pre-stop delay.
    readiness = server["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < flags.pre_stop_delay


def test_hardened_pod_and_scale_out_objects(rendered):
    _, objects = rendered
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    for container in (*pod["containers"], *pod.get("initContainers", [])):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"] == selector
    assert one(objects, "Service", "graphgen-server-pods")["spec"]["clusterIP"] == "None"  # for client round robin
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_the_hpa_s_commented_queue_metric_is_one_the_server_exports():
    from graphgen_server.frontends import metrics

    text = (KUBERNETES / "base" / "horizontalpodautoscaler.yaml").read_text()
    (name,) = set(re.findall(r"#\s+name: (\S+)", text))
    assert name in Path(metrics.__file__).read_text()


# -- the Dockerfile -----------------------------------------------------------------------------
def _dockerfile(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    return [line[len(keyword) :].strip() for line in joined.splitlines() if line.startswith(keyword + " ")]


def test_dockerfile_and_manifests_agree_on_ports_user_and_paths(rendered):
    _, objects = rendered
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = server_container(objects)
    (user,) = _dockerfile("USER")
    assert pod["securityContext"]["runAsUser"] == int(user)
    (exposed,) = _dockerfile("EXPOSE")
    assert {int(p) for p in exposed.split()} == {p["containerPort"] for p in server["ports"]}
    (cmd,) = _dockerfile("CMD")
    image_flags = server_flags(yaml.safe_load(cmd))
    flags = server_flags(server["args"])
    for name in ("repository", "port", "http_port", "metrics_port", "host"):
        assert getattr(image_flags, name) == getattr(flags, name), name
    (entrypoint,) = _dockerfile("ENTRYPOINT")
    assert "command" not in server  # the image's entrypoint runs, the manifest gives its args
    (build,) = pod["initContainers"]
    venv_bin = Path(yaml.safe_load(entrypoint)[0]).parent
    assert f"{venv_bin}/graphgen build efficientnet_lite0" in build["command"][-1]
    assert f"--repository {flags.repository}" in build["command"][-1]


# -- KServe -------------------------------------------------------------------------------------
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}  # constants.InferenceServiceProtocol
SERVING_RUNTIME_POD = {
    "containers",
    "volumes",
    "nodeSelector",
    "affinity",
    "tolerations",
    "labels",
    "annotations",
    "imagePullSecrets",
    "hostIPC",
}
SERVING_RUNTIME_SPEC = SERVING_RUNTIME_POD | {
    "supportedModelFormats",
    "multiModel",
    "disabled",
    "protocolVersions",
    "workerSpec",
    "grpcEndpoint",
    "grpcDataEndpoint",
    "httpDataEndpoint",
    "replicas",
    "storageHelper",
    "builtInAdapter",
}
SUPPORTED_MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
INFERENCE_SERVICE_SPEC = {"predictor", "explainer", "transformer"}
COMPONENT_EXTENSION = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}
POD_SPEC = {
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
}
PREDICTOR_FRAMEWORKS = {
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
    "model",
    "storageUris",
    "workerSpec",
}
PREDICTOR_SPEC = PREDICTOR_FRAMEWORKS | POD_SPEC | COMPONENT_EXTENSION
MODEL_SPEC_OWN = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion", "storage"}
MODEL_FORMAT = {"name", "version"}
KSERVE_MODEL_MOUNT = "/mnt/models"  # constants.DefaultModelLocalMountPath: where storageUri is copied


def _kserve(name: str) -> dict:
    return yaml.safe_load((KSERVE / name).read_text())


def _validate_as_pod(containers: list[dict], volumes: list[dict] | None = None) -> None:
    """Embedded core/v1 Containers and Volumes, validated strictly inside a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {"containers": containers, **({"volumes": volumes} if volumes else {})},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_serving_runtime_uses_only_kserve_fields():
    runtime = _kserve("servingruntime.yaml")
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    spec = runtime["spec"]
    assert set(spec) <= SERVING_RUNTIME_SPEC, set(spec) - SERVING_RUNTIME_SPEC
    for model_format in spec["supportedModelFormats"]:
        assert set(model_format) <= SUPPORTED_MODEL_FORMAT
    assert {"name": "onnx", "version": "1"}.items() <= spec["supportedModelFormats"][0].items()
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"} <= PROTOCOLS
    _validate_as_pod(spec["containers"], spec.get("volumes"))
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for


def test_serving_runtime_flags_are_the_server_s_and_agree_with_kserve_and_the_dockerfile():
    spec = _kserve("servingruntime.yaml")["spec"]
    (container,) = spec["containers"]
    flags = server_flags(container["args"])
    assert str(flags.repository) == KSERVE_MODEL_MOUNT
    assert flags.http_port == 8080  # KServe's HTTP port for v2
    assert container["readinessProbe"]["httpGet"]["port"] == flags.http_port
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(flags.metrics_port)
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    (user,) = _dockerfile("USER")
    assert container["securityContext"]["runAsUser"] == int(user)
    isvc_model = _kserve("inferenceservice.yaml")["spec"]["predictor"]["model"]
    (h2c,) = isvc_model["ports"]
    assert h2c["name"] == "h2c" and h2c["containerPort"] == flags.port


def test_inference_service_uses_only_kserve_fields_and_the_runtime():
    isvc = _kserve("inferenceservice.yaml")
    runtime = _kserve("servingruntime.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(isvc["spec"]) <= INFERENCE_SERVICE_SPEC
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= PREDICTOR_SPEC, set(predictor) - PREDICTOR_SPEC
    model = predictor["model"]
    assert set(model["modelFormat"]) <= MODEL_FORMAT
    container_fields = {k: v for k, v in model.items() if k not in MODEL_SPEC_OWN}  # corev1.Container, inline
    _validate_as_pod([{"name": "kserve-container", **container_fields}])
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert re.match(r"^(gs|s3|pvc|https?)://", model["storageUri"])
    # The pod's grace covers the runtime's stop, as in the plain Kubernetes manifests.
    flags = server_flags(runtime["spec"]["containers"][0]["args"])
    assert predictor["terminationGracePeriodSeconds"] >= flags.pre_stop_delay + flags.grace + 1
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
