"""The Helm chart renders, lints and validates for every values file and profile.

Core kinds are checked against Kubernetes' own schemas (kubernetes-validate, strict: no
unknown fields); the InferenceServices against the kserve SDK's generated models. kserve's
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
TRITON = f"{RELEASE}-triton"
# Kinds that no Kubernetes schema covers: KServe's (checked against its SDK) and
# prometheus-operator's (checked by promtool, tests/test_monitoring.py).
CUSTOM_KINDS = {"InferenceService", "PrometheusRule"}

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
    "liftwing": ("values-liftwing.yaml",),
}


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


def services(docs: tuple[dict, ...]) -> dict[str, dict]:
    """The InferenceServices by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}


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


def storage_uris(config: dict) -> dict[str, str]:
    """Each served model's STORAGE_URI, from its custom_env, by name."""
    return {
        name: env["value"]
        for name, service in config["inference_services"].items()
        for env in service["predictor"].get("custom_env", [])
        if env["name"] == "STORAGE_URI"
    }


GPU_SETS = [name for name in VALUES_SETS if values(name)["profile"] == "gpu"]


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
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            kinds.append(doc["kind"])
    config = values(values_set)
    jobs = ["Job"] * len(config["engine_build"]["compute_capabilities"])
    dashboard = ["ConfigMap"] if config["monitoring"]["dashboard"]["enabled"] else []
    expected = ["NetworkPolicy", "NetworkPolicy", "ServiceAccount", *dashboard]
    assert sorted(kinds) == sorted(expected + (jobs if values_set in GPU_SETS else []))


def kserve_check(documents: list[dict]) -> list[list[str]]:
    """:func:`kserve_errors` of each InferenceService, computed in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__], input=json.dumps(documents), capture_output=True, text=True,
        timeout=120, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_inference_services_validate_against_kserve_types() -> None:
    documents = [doc for name in VALUES_SETS for doc in services(render(name)).values()]
    assert len(documents) == sum(len(values(name)["inference_services"]) + 1 for name in VALUES_SETS)
    assert kserve_check(documents) == [[] for _ in documents]


def test_kserve_check_rejects_unknown_and_mistyped_fields() -> None:
    rendered = services(render("defaults"))
    model_server = json.loads(json.dumps(rendered["logo-detection"]))
    model_server["spec"]["predictor"]["minReplica"] = 1
    model_server["spec"]["predictor"]["containers"][0]["env"][0]["value"] = 7
    triton = json.loads(json.dumps(rendered[TRITON]))
    triton["spec"]["predictor"]["storageUris"][0]["path"] = "/mnt/models/x"
    del triton["spec"]["predictor"]["containers"][0]["name"]
    errors, triton_errors = kserve_check([model_server, triton])
    assert any("spec.predictor.minReplica: unknown field" in e for e in errors), errors
    assert any("env[0].value: expected str" in e for e in errors), errors
    assert any("storageUris[0].path: unknown field" in e for e in triton_errors), triton_errors
    assert any("containers[0]" in e and "name" in e and "None" in e for e in triton_errors)


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_one_inference_service_per_served_model_sharing_one_triton(values_set: str) -> None:
    """Each served model name is its own InferenceService, so KServe gives it its own host
    (<name>.<domain>); each calls the one Triton, which mounts each model's dated directory."""
    from preprocessing.specs import SPECS

    config = values(values_set)
    rendered = services(render(values_set))
    served = set(config["inference_services"])
    assert set(rendered) == served | {TRITON}
    assert served == {"logo-detection", "nsfw-detection", "nsfw-video-detection"}

    triton = rendered[TRITON]
    assert triton["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    repository = {
        entry["mountPath"]: entry["uri"] for entry in triton["spec"]["predictor"]["storageUris"]
    }
    uris = storage_uris(config)
    assert repository == {f"/mnt/models/{name}": uri for name, uri in uris.items()}
    # Every model the model servers ask Triton for is in its repository, at a dated path.
    assert set(uris) == {spec.name for spec in SPECS}
    for uri in uris.values():
        assert re.fullmatch(r"(s3|pvc)://[^/]+/.+/\d{14}/", uri), uri
    (tritonserver,) = triton["spec"]["predictor"]["containers"]
    assert "--model-repository=/mnt/models" in tritonserver["args"]
    assert "STORAGE_URI" not in {e["name"] for e in tritonserver["env"]}

    for name in served:
        predictor = rendered[name]["spec"]["predictor"]
        (server,) = predictor["containers"]
        assert f"--predictor_host={TRITON}-predictor.{NAMESPACE}" in server["args"]
        assert "--predictor_protocol=grpc-v2" in server["args"]
        assert server["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{name}"
        # The model server never downloads model files: Triton has them.
        assert "STORAGE_URI" not in {e["name"] for e in server["env"]}
        assert "storageUris" not in predictor and "storageUri" not in predictor


def test_liftwing_layout_overrides_apply_per_model() -> None:
    """values-liftwing.yaml is written in Wikimedia's kserve-inference layout: each model's
    predictor block overrides the generic inference.predictor for that model only."""
    config = values("liftwing")
    generic = config["inference"]["predictor"]
    rendered = services(render("liftwing"))
    for name, service in config["inference_services"].items():
        own = service["predictor"]
        predictor = rendered[name]["spec"]["predictor"]
        (server,) = predictor["containers"]
        image = own.get("image", generic["image"])
        version = own.get("image_version", generic["version"])
        assert server["image"] == f"{config['docker']['registry']}/{image}:{version}"
        for key in ("minReplicas", "maxReplicas", "timeout"):
            expected = own.get("config", {}).get(key, generic["config"].get(key))
            assert predictor.get(key) == expected, (name, key)
        limits = {**generic["container"]["resources"]["limits"],
                  **own.get("container", {}).get("resources", {}).get("limits", {})}
        assert server["resources"]["limits"] == limits
        env = [e["name"] for e in server["env"]]
        user = [e["name"] for e in generic["base_env"] + generic["custom_env"]]
        own_env = [e["name"] for e in own.get("custom_env", []) if e["name"] != "STORAGE_URI"]
        assert env[-len(user + own_env):] == user + own_env
        admission = {**generic["admission"], **own.get("admission", {})}
        values_of = {e["name"]: e.get("value") for e in server["env"]}
        assert values_of["REQUEST_DEADLINE_S"] == str(admission["request_deadline_s"]), name
        assert predictor["containerConcurrency"] == admission["max_inflight_requests"], name
    video = rendered["nsfw-video-detection"]["spec"]["predictor"]
    logo = rendered["logo-detection"]["spec"]["predictor"]
    assert video["timeout"] != logo["timeout"]
    deadlines = {name: next(e["value"] for e in rendered[name]["spec"]["predictor"]["containers"][0]["env"]
                            if e["name"] == "REQUEST_DEADLINE_S") for name in ("logo-detection", "nsfw-video-detection")}
    assert deadlines == {"logo-detection": "30", "nsfw-video-detection": "110"}
    assert video["containers"][0]["resources"] != logo["containers"][0]["resources"]
    assert storage_uris(config)["logo-detection"].startswith("s3://wmf-ml-models/logo-detection/")


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_inference_service_wiring(values_set: str) -> None:
    config = values(values_set)
    rendered = services(render(values_set))
    triton = rendered[TRITON]["spec"]["predictor"]
    (tritonserver,) = triton["containers"]
    assert tritonserver["name"] == "kserve-container"
    assert "--strict-readiness=true" in tritonserver["args"]
    assert "--metrics-port=8002" in tritonserver["args"]
    assert tritonserver["ports"] == [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]
    assert tritonserver["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}

    server_values = config["inference"]["predictor"]
    commons = server_values["commons"]
    admission = server_values["admission"]
    components = [(triton, tritonserver)]
    for name in config["inference_services"]:
        predictor = rendered[name]["spec"]["predictor"]
        (server,) = predictor["containers"]
        components.append((predictor, server))
        env = {e["name"]: e.get("value") for e in server["env"]}
        assert env["COMMONS_API_URL"] == commons["api_url"]
        assert env["COMMONS_USER_AGENT"] == commons["user_agent"]
        assert json.loads(env["COMMONS_UPLOAD_HOSTS"]) == commons["upload_hosts"]
        assert env["TRANSFORMER_HOST"] == "0.0.0.0"
        assert predictor["containerConcurrency"] == admission["max_inflight_requests"]
        assert int(env["MAX_INFLIGHT_REQUESTS"]) == admission["max_inflight_requests"]
        assert int(env["MAX_INFLIGHT_BODY_BYTES"]) == admission["max_inflight_body_bytes"]
        assert float(env["REQUEST_DEADLINE_S"]) < predictor["timeout"]

    for component, container in components:
        annotations = component["annotations"]
        assert annotations["autoscaling.knative.dev/metric"] in {"concurrency", "rps"}
        assert int(annotations["autoscaling.knative.dev/target"]) >= 1
        assert 0 <= component["minReplicas"] <= component["maxReplicas"]
        assert component["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert component["serviceAccountName"] == config["serviceAccount"]["name"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"]

    gpus = {kind: limits.get("nvidia.com/gpu") for kind, limits in tritonserver["resources"].items()}
    if values_set in GPU_SETS:
        assert gpus == {"requests": "1", "limits": "1"}
        assert "--allow-gpu-metrics=true" in tritonserver["args"]
    else:
        assert gpus == {"requests": None, "limits": None}


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_metrics_are_scraped_through_kserve_annotations(values_set: str) -> None:
    """KServe's annotations on every component: its queue-proxy then serves the app's metrics
    with its own on one port, which the NetworkPolicies open to Prometheus' namespace."""
    config = values(values_set)
    assert config["monitoring"]["enabled"]
    docs = render(values_set)
    for name, service in services(docs).items():
        annotations = service["spec"]["predictor"]["annotations"]
        assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
        assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
        assert annotations["prometheus.kserve.io/port"] == ("8002" if name == TRITON else "8080")
        assert annotations["prometheus.kserve.io/path"] == "/metrics"
        everywhere = {**annotations, **service["metadata"].get("annotations", {})}
        assert not [key for key in everywhere if key.startswith("prometheus.io/")]
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        (ingress,) = policy["spec"]["ingress"]
        sources = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                   for p in ingress["from"] if "namespaceSelector" in p]
        assert "monitoring" in sources
        assert {"port": 9088, "protocol": "TCP"} in ingress["ports"]


def test_monitoring_off_says_so_to_kserve(tmp_path: Path) -> None:
    result = template("-f", str(overlay_file(tmp_path, "monitoring.enabled", False)))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for service in services(tuple(docs)).values():
        annotations = service["spec"]["predictor"]["annotations"]
        assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"
        assert "prometheus.kserve.io/port" not in annotations


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_dashboard_and_rules_follow_their_switches(values_set: str) -> None:
    monitoring = values(values_set)["monitoring"]
    docs = render(values_set)
    dashboards = [d for d in docs if d["kind"] == "ConfigMap"]
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == monitoring["rules"]["enabled"]
    assert len(dashboards) == monitoring["dashboard"]["enabled"]
    if "production" in values_set:
        assert dashboards and rules
    for configmap in dashboards:
        assert monitoring["dashboard"]["labels"].items() <= configmap["metadata"]["labels"].items()
        (text,) = configmap["data"].values()
        dashboard = json.loads(text)
        assert dashboard["uid"] == "commons-moderation" and dashboard["panels"]
    for rule in rules:
        groups = rule["spec"]["groups"]
        assert {r["alert"] for g in groups for r in g["rules"] if "alert" in r} >= {
            "CommonsModerationErrorRatio", "CommonsModerationLatencySLO",
            "CommonsModerationCommonsFailing", "CommonsModerationTritonDown",
            "CommonsModerationAdmissionRejecting",
        }


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_network_policies_limit_egress(values_set: str) -> None:
    config = values(values_set)["networkpolicy"]["egress"]
    policies = {
        doc["metadata"]["name"].removeprefix(f"{RELEASE}-"): doc["spec"]
        for doc in render(values_set)
        if doc["kind"] == "NetworkPolicy"
    }
    assert set(policies) == {"model-server", "triton"}
    for policy in policies.values():
        assert policy["policyTypes"] == ["Ingress", "Egress"]
    served = sorted(values(values_set)["inference_services"])
    assert policies["model-server"]["podSelector"]["matchExpressions"] == [{
        "key": "serving.kserve.io/inferenceservice", "operator": "In", "values": served,
    }]
    triton_pods = {"matchLabels": {"serving.kserve.io/inferenceservice": TRITON,
                                   "component": "predictor"}}
    assert policies["triton"]["podSelector"] == triton_pods
    blocks = {
        component: [peer["ipBlock"]["cidr"] for rule in policy["egress"] for peer in rule["to"]
                    if "ipBlock" in peer]
        for component, policy in policies.items()
    }
    store = values(values_set)["inference"]["predictor"]["score_store"]
    databases = [net["cidr"] for net in config["database_nets"]] if store["enabled"] else []
    assert blocks["model-server"] == [net["cidr"] for net in config["dst_nets"]] + databases
    assert blocks["triton"] == [net["cidr"] for net in config["storage_nets"]]
    to_triton = [
        rule for rule in policies["model-server"]["egress"] if {"podSelector": triton_pods} in rule["to"]
    ]
    assert to_triton, "the model servers must reach Triton"
    from_servers = [
        peer for peer in policies["triton"]["ingress"][0]["from"]
        if peer.get("podSelector") == policies["model-server"]["podSelector"]
    ]
    assert from_servers, "Triton must accept the model servers' calls"


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_the_score_store_url_comes_from_a_secret(values_set: str) -> None:
    config = values(values_set)
    store = config["inference"]["predictor"]["score_store"]
    rendered = services(render(values_set))
    for name in config["inference_services"]:
        env = {e["name"]: e for e in rendered[name]["spec"]["predictor"]["containers"][0]["env"]}
        assert env["SCORE_STORE"]["value"] == str(store["enabled"]).lower()
        if store["enabled"]:
            assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == store["secret"]
            assert "value" not in env["DATABASE_URL"], "a database URL holds a password"
        else:
            assert "DATABASE_URL" not in env


def test_an_enabled_store_needs_its_secret() -> None:
    result = template("--set", "inference.predictor.score_store.enabled=true")
    assert result.returncode != 0
    assert "score_store.secret.name is required" in result.stderr


@pytest.mark.parametrize("values_set", GPU_SETS)
def test_engine_build_jobs_cover_every_gpu_model(values_set: str) -> None:
    from predictor import engines

    config = values(values_set)
    build = config["engine_build"]
    uris = storage_uris(config)
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
        assert "--repository=/mnt/models" in container["command"]
        assert f"--compute-capability={cc}" in container["command"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        # Each model's dated directory, where Triton mounts it too.
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounted = {
            m["mountPath"]: f"pvc://{claims[m['name']]}/{m['subPath']}/"
            for m in container["volumeMounts"] if m["name"] in claims
        }
        assert mounted == {f"/mnt/models/{name}": uri for name, uri in uris.items()}
    # Triton runs only where one of those engines can load.
    triton = next(doc for doc in render(values_set) if doc["kind"] == "InferenceService"
                  and doc["metadata"]["name"].endswith("triton"))
    terms = triton["spec"]["predictor"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    placed = {".".join(expression["values"][0] for expression in term["matchExpressions"]) for term in terms}
    assert placed == set(build["compute_capabilities"])


def test_chart_pins_the_triton_release_the_engines_are_built_for() -> None:
    from predictor import engines

    triton = values("gpu")["triton"]
    image = f"{triton['registry']}/{triton['image']}:{triton['version']}"
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
        ("inference.predictor.confg.minReplicas", 1, "Additional property confg"),
        ("triton.config.minReplicas", -1, "minReplicas: Must be greater"),
        ("inference.predictor.config.maxReplicas", -3, "maxReplicas: Must be greater"),
        ("networkpolicy.egres", {}, "Additional property egres"),
        ("triton.container.resources.limits.cpu", 2, "Expected: string"),
        ("profile", "tpu", "profile must be one of"),
        ("inference_services.logo-detection.predictor.imagee", "x", "Additional property imagee"),
        ("inference_services.logo-detection.transformer", {}, "Additional property transformer"),
        ("inference_services.logo-detection.predictor.admission.deadline", 5, "Additional property deadline"),
        ("inference_services.Logo_Detection.predictor", {}, 'name of "Logo_Detection" does not match'),
        ("monitoring.rules.latency_slo_seconds.logo-detection", 0, "Must be greater than 0"),
    ],
)
def test_bad_values_fail_lint_through_the_schema(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(overlay_file(tmp_path, key, value)))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def storage(uri: str) -> list[dict]:
    return [{"name": "STORAGE_URI", "value": uri}]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("triton.config", {"minReplicas": 3, "maxReplicas": 2}, "minReplicas exceeds"),
        (
            "inference_services.nsfw-detection.predictor.config",
            {"minReplicas": 5, "maxReplicas": 4},
            "nsfw-detection: config.minReplicas exceeds",
        ),
        ("triton.gpus", 0, "gpus must be at least 1"),
        (
            "inference_services.logo-detection.predictor.custom_env",
            storage("s3://wmf-ml-models/logo-detection/gpu/20261130123456/"),
            "logo-detection's STORAGE_URI must be pvc",
        ),
        (
            "inference_services.logo-detection.predictor.custom_env",
            storage("pvc://commons-moderation-models/logo-detection/latest/"),
            "must be a dated model directory",
        ),
        (
            "inference.predictor.custom_env",
            [{"name": "COMMONS_API_URL", "value": "https://example.org/w/api.php"}],
            "COMMONS_API_URL is set by the chart",
        ),
        (
            "inference.predictor.base_env",
            storage("s3://wmf-ml-models/logo-detection/cpu/20261130123456/"),
            "STORAGE_URI is set by the chart",
        ),
        (
            "inference.predictor.admission.request_deadline_s",
            600,
            "admission.request_deadline_s (600) must be below config.timeout (60)",
        ),
        (
            "inference_services.nsfw-video-detection.predictor.config",
            {"timeout": 20},
            "nsfw-video-detection: admission.request_deadline_s (30) must be below config.timeout (20)",
        ),
        (
            "inference_services.logo-detection.predictor.admission",
            {"request_deadline_s": 90},
            "logo-detection: admission.request_deadline_s (90) must be below config.timeout (60)",
        ),
        ("monitoring.dashboard.enabled", True, "monitoring.dashboard needs monitoring.rules"),
    ],
)
def test_inconsistent_values_fail_to_render(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    result = template("-f", str(overlay_file(tmp_path, key, value)))
    assert result.returncode != 0
    assert message in result.stderr


def test_a_served_model_without_a_latency_objective_fails_to_render(tmp_path: Path) -> None:
    added = overlay_file(tmp_path, "inference_services.logo-detection-next.predictor", {})
    result = template("-f", str(added), "--set", "monitoring.rules.enabled=true")
    assert result.returncode != 0
    assert "no objective for logo-detection-next" in result.stderr


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
