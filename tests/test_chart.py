"""The Helm chart renders, lints and validates for every values file and profile.

Core kinds are checked against Kubernetes' own schemas (kubernetes-validate, strict: no
unknown fields); the InferenceService against the kserve SDK's generated models. kserve's
package imports protobuf symbols that clash with tritonclient's, which other test modules
load, so that check runs this file as a script in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "build" / "tools" / "helm"
CHART = ROOT / "charts" / "commons-moderation"
NAMESPACE = "ml-services"
KUBERNETES_VERSION = "1.31"
RELEASE = "commons-moderation"

# Each overlay alone on the defaults, and each documented profile + environment pairing.
VALUES_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "gpu": ("values-gpu.yaml",),
    "cpu": ("values-cpu.yaml",),
    "staging": ("values-staging.yaml",),
    "production": ("values-production.yaml",),
    "gpu+staging": ("values-gpu.yaml", "values-staging.yaml"),
    "gpu+production": ("values-gpu.yaml", "values-production.yaml"),
    "cpu+staging": ("values-cpu.yaml", "values-staging.yaml"),
}
GPU_SETS = [name for name, files in VALUES_SETS.items() if "values-cpu.yaml" not in files]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(f"{HELM} missing: run `make {HELM.relative_to(ROOT)}` (make test does)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )


def value_args(files: tuple[str, ...]) -> list[str]:
    return [arg for name in files for arg in ("-f", str(CHART / name))]


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", f"{KUBERNETES_VERSION}.0", *args,
    )


@cache
def render(values_set: str) -> tuple[dict, ...]:
    result = template(*value_args(VALUES_SETS[values_set]))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[dict, ...], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def values(values_set: str) -> dict:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for name in VALUES_SETS[values_set]:
        merged = _merge(merged, yaml.safe_load((CHART / name).read_text()))
    return merged


def _merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both_maps else value
    return merged


def test_every_values_file_is_covered() -> None:
    covered = {name for files in VALUES_SETS.values() for name in files}
    assert covered == {p.name for p in CHART.glob("values-*.yaml")}


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_helm_lint_passes(values_set: str) -> None:
    result = helm("lint", "--strict", str(CHART), *value_args(VALUES_SETS[values_set]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_core_kinds_validate_strictly_against_kubernetes_schemas(values_set: str) -> None:
    import kubernetes_validate

    kinds = []
    for doc in render(values_set):
        if doc["kind"] != "InferenceService":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            kinds.append(doc["kind"])
    jobs = ["Job"] * len(values(values_set)["engine_build"]["compute_capabilities"])
    expected = ["NetworkPolicy", "NetworkPolicy", "ServiceAccount"]
    assert sorted(kinds) == sorted(expected + (jobs if values_set in GPU_SETS else []))


def kserve_check(services: list[dict]) -> list[list[str]]:
    """:func:`kserve_errors` of each InferenceService, computed in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__], input=json.dumps(services), capture_output=True, text=True,
        timeout=120, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_inference_services_validate_against_kserve_types() -> None:
    services = [one(render(name), "InferenceService") for name in VALUES_SETS]
    assert kserve_check(services) == [[] for _ in services]


def test_kserve_check_rejects_unknown_and_mistyped_fields() -> None:
    service = json.loads(json.dumps(one(render("defaults"), "InferenceService")))
    service["spec"]["predictor"]["minReplica"] = 1
    service["spec"]["transformer"]["containers"][0]["env"][0]["value"] = 7
    del service["spec"]["predictor"]["containers"][0]["name"]
    (errors,) = kserve_check([service])
    assert any("spec.predictor.minReplica: unknown field" in e for e in errors), errors
    assert any("env[0].value: expected str" in e for e in errors), errors
    assert any("containers[0]" in e and "name" in e and "None" in e for e in errors), errors


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_inference_service_wiring(values_set: str) -> None:
    config = values(values_set)
    spec = one(render(values_set), "InferenceService")["spec"]
    predictor, transformer = spec["predictor"], spec["transformer"]
    (triton,) = predictor["containers"]
    (proxy,) = transformer["containers"]

    assert triton["name"] == "kserve-container"
    assert "--strict-readiness=true" in triton["args"]
    assert "--metrics-port=8002" in triton["args"]
    storage_uri = config["inference"]["predictor"]["storage_uri"]
    assert {"name": "STORAGE_URI", "value": storage_uri} in triton["env"]
    assert triton["ports"] == [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert predictor["annotations"]["prometheus.io/port"] == "8002"

    assert f"--predictor_host={RELEASE}-predictor.{NAMESPACE}" in proxy["args"]
    assert "--predictor_protocol=grpc-v2" in proxy["args"]
    commons = config["inference"]["transformer"]["commons"]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["COMMONS_API_URL"] == commons["api_url"]
    assert env["COMMONS_USER_AGENT"] == commons["user_agent"]
    assert json.loads(env["COMMONS_UPLOAD_HOSTS"]) == commons["upload_hosts"]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/v1/models/logo-detection"
    admission = config["inference"]["transformer"]["admission"]
    assert env["TRANSFORMER_HOST"] == "0.0.0.0"
    assert transformer["containerConcurrency"] == admission["max_inflight_requests"]
    assert int(env["MAX_INFLIGHT_REQUESTS"]) == admission["max_inflight_requests"]
    assert int(env["MAX_INFLIGHT_BODY_BYTES"]) == admission["max_inflight_body_bytes"]
    assert float(env["REQUEST_DEADLINE_S"]) < transformer["timeout"]

    for component, container in ((predictor, triton), (transformer, proxy)):
        annotations = component["annotations"]
        assert annotations["autoscaling.knative.dev/metric"] in {"concurrency", "rps"}
        assert int(annotations["autoscaling.knative.dev/target"]) >= 1
        assert 0 <= component["minReplicas"] <= component["maxReplicas"]
        assert component["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert component["serviceAccountName"] == config["serviceAccount"]["name"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"]

    gpus = {kind: limits.get("nvidia.com/gpu") for kind, limits in triton["resources"].items()}
    if values_set in GPU_SETS:
        assert gpus == {"requests": "1", "limits": "1"}
        assert "--allow-gpu-metrics=true" in triton["args"]
    else:
        assert gpus == {"requests": None, "limits": None}


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_network_policies_limit_egress(values_set: str) -> None:
    config = values(values_set)["networkpolicy"]["egress"]
    policies = {
        doc["spec"]["podSelector"]["matchLabels"]["component"]: doc["spec"]
        for doc in render(values_set)
        if doc["kind"] == "NetworkPolicy"
    }
    for policy in policies.values():
        assert policy["policyTypes"] == ["Ingress", "Egress"]
    blocks = {
        component: [peer["ipBlock"]["cidr"] for rule in policy["egress"] for peer in rule["to"]
                    if "ipBlock" in peer]
        for component, policy in policies.items()
    }
    store = values(values_set)["inference"]["transformer"]["score_store"]
    databases = [net["cidr"] for net in config["database_nets"]] if store["enabled"] else []
    assert blocks["transformer"] == [net["cidr"] for net in config["dst_nets"]] + databases
    assert blocks["predictor"] == [net["cidr"] for net in config["storage_nets"]]
    to_predictor = [
        rule for rule in policies["transformer"]["egress"]
        if {"podSelector": {"matchLabels": {
            "serving.kserve.io/inferenceservice": RELEASE, "component": "predictor"}}} in rule["to"]
    ]
    assert to_predictor, "the transformer must reach the predictor"


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_the_score_store_url_comes_from_a_secret(values_set: str) -> None:
    store = values(values_set)["inference"]["transformer"]["score_store"]
    service = next(d for d in render(values_set) if d["kind"] == "InferenceService")
    env = {e["name"]: e for e in service["spec"]["transformer"]["containers"][0]["env"]}
    assert env["SCORE_STORE"]["value"] == str(store["enabled"]).lower()
    if store["enabled"]:
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == store["secret"]
        assert "value" not in env["DATABASE_URL"], "a database URL holds a password"
    else:
        assert "DATABASE_URL" not in env


def test_an_enabled_store_needs_its_secret() -> None:
    result = template("--set", "inference.transformer.score_store.enabled=true")
    assert result.returncode != 0
    assert "score_store.secret.name is required" in result.stderr


@pytest.mark.parametrize("values_set", GPU_SETS)
def test_engine_build_jobs_cover_every_gpu_model(values_set: str) -> None:
    from predictor import engines

    config = values(values_set)
    build = config["engine_build"]
    jobs = [doc for doc in render(values_set) if doc["kind"] == "Job"]
    assert len(jobs) == len(build["compute_capabilities"])
    for job, cc in zip(jobs, build["compute_capabilities"]):
        # The default GPU repository must map every GPU the Jobs build for.
        assert cc in engines.COMPUTE_CAPABILITIES
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        pod = job["spec"]["template"]["spec"]
        major, minor = cc.split(".")
        assert pod["nodeSelector"]["nvidia.com/gpu.compute.major"] == major
        assert pod["nodeSelector"]["nvidia.com/gpu.compute.minor"] == minor
        (container,) = pod["containers"]
        assert container["command"][2:4] == ["predictor.engines", "build-repository"]
        assert f"--compute-capability={cc}" in container["command"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert config["inference"]["predictor"]["storage_uri"].startswith(f"pvc://{claim}/")


def test_chart_pins_the_triton_release_the_engines_are_built_for() -> None:
    from predictor import engines

    predictor = values("gpu")["inference"]["predictor"]
    image = f"{predictor['registry']}/{predictor['image']}:{predictor['version']}"
    assert image == engines.TRITON_IMAGE


def overlay_file(tmp_path: Path, dotted: str, value: object) -> Path:
    """A values file setting one key, given as ``a.b.c``."""
    overlay: object = value
    for key in reversed(dotted.split(".")):
        overlay = {key: overlay}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("inference.transformer.confg.minReplicas", 1, "Additional property confg"),
        ("inference.predictor.config.minReplicas", -1, "minReplicas: Must be greater"),
        ("inference.transformer.config.maxReplicas", -3, "maxReplicas: Must be greater"),
        ("networkpolicy.egres", {}, "Additional property egres"),
        ("inference.predictor.container.resources.limits.cpu", 2, "Expected: string"),
        ("profile", "tpu", "profile must be one of"),
    ],
)
def test_bad_values_fail_lint_through_the_schema(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(overlay_file(tmp_path, key, value)))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("inference.predictor.config", {"minReplicas": 3, "maxReplicas": 2}, "minReplicas exceeds"),
        ("inference.predictor.gpus", 0, "gpus must be at least 1"),
        ("inference.predictor.storage_uri", "s3://bucket/gpu", "storage_uri must be pvc"),
        (
            "inference.transformer.custom_env",
            [{"name": "COMMONS_API_URL", "value": "https://example.org/w/api.php"}],
            "COMMONS_API_URL is set by the chart",
        ),
        (
            "inference.transformer.admission.request_deadline_s",
            600,
            "request_deadline_s must be below config.timeout",
        ),
    ],
)
def test_inconsistent_values_fail_to_render(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    result = template("-f", str(overlay_file(tmp_path, key, value)))
    assert result.returncode != 0
    assert message in result.stderr


PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
    # Kubernetes quantities and int-or-string ports.
    "ResourceQuantity": (str, int, float),
    "V1beta1MetricQuantity": (str, int, float),
    "object": (object,),
}


def kserve_errors(document: dict) -> list[str]:
    """Unknown, mistyped or missing fields of an InferenceService, read by the kserve SDK's
    generated models (``openapi_types`` / ``attribute_map``) and their constructors."""
    import kserve.models
    import kubernetes.client.models

    errors: list[str] = []

    def build(value: object, type_name: str, path: str) -> object:
        if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
            if not isinstance(value, list):
                errors.append(f"{path}: expected a list")
                return None
            return [build(item, match[1], f"{path}[{i}]") for i, item in enumerate(value)]
        if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
            if not isinstance(value, dict):
                errors.append(f"{path}: expected a map")
                return None
            item_type = match[1] or match[2]
            return {key: build(item, item_type, f"{path}.{key}") for key, item in value.items()}
        if type_name in PRIMITIVES:
            allowed = PRIMITIVES[type_name]
            if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
                errors.append(f"{path}: expected {type_name}, got {value!r}")
            return value
        model = getattr(kserve.models, type_name, None) or getattr(
            kubernetes.client.models, type_name
        )
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a {type_name} object")
            return None
        attributes = {field: attr for attr, field in model.attribute_map.items()}
        arguments = {}
        for field, item in value.items():
            if field not in attributes:
                errors.append(f"{path}.{field}: unknown field of {type_name}")
                continue
            attribute = attributes[field]
            arguments[attribute] = build(item, model.openapi_types[attribute], f"{path}.{field}")
        try:  # the generated constructors enforce required fields and enumerations
            return model(**arguments)
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
            return None

    build(document, "V1beta1InferenceService", "")
    return errors


if __name__ == "__main__":
    json.dump([kserve_errors(doc) for doc in json.load(sys.stdin)], sys.stdout)
