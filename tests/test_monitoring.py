"""The chart's dashboard and alerts: promtool checks and unit-tests the rendered rules, and
every metric they name is one the running stack exports, with bounded labels.

The rules and the dashboard come from ``helm template`` with the production values, as they
would be deployed; the metrics from the session's stack (Triton and the model server) after
real traffic. Metrics only a cluster has are listed in `CLUSTER_ONLY`, each with its reason.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devtools import images
from devtools.fake_commons import FakeCommons
from predictor.triton_server import TritonPorts
from tests.test_chart import CHART, render

PRODUCTION = "gpu+production"
RULE_TESTS = CHART / "monitoring" / "rules.test.yaml"

# Exported outside the stack's processes, with the labels the rules and the dashboard use.
_QUEUE_PROXY = (
    "Knative's queue-proxy in front of each model server counts requests as clients see them "
    "(KServe's aggregation scrapes it with the app); the stack has no queue-proxy"
)
_GPU = "Triton exports GPU metrics only where it has a GPU (the GPU profile); the stack's is CPU"
CLUSTER_ONLY: dict[str, tuple[str, set[str]]] = {
    "revision_request_count": (_QUEUE_PROXY, {"service_name", "response_code_class"}),
    "revision_request_latencies_bucket": (_QUEUE_PROXY, {"service_name", "le"}),
    "revision_queue_depth": (_QUEUE_PROXY, {"service_name"}),
    "nv_gpu_utilization": (_GPU, {"gpu_uuid"}),
}
# Added by Prometheus to every series it scrapes, not by the exporter.
TARGET_LABELS = {"instance", "job"}
# Label names the model server may put on its own metrics: each a bounded set (a model, a
# stage outcome, an error code, a reason). A title, URL or host must never become one.
BOUNDED_LABELS = {"model", "model_name", "call", "outcome", "code", "reason", "result",
                  "operation", "le"}


# PromQL, as far as telling metric names from everything else needs: strings, durations and
# ranges, numbers, identifiers, braces, parentheses. An identifier followed by "(", or by
# "by"/"without", is a function or an aggregation; inside braces or the parentheses after a
# grouping keyword, a label name.
_TOKENS = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[{}(),])
  | (?P<operator>=~|!~|!=|==|<=|>=|[-+*/%^<>=@])
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATION_CLAUSES = {"by", "without"}
_KEYWORDS = _GROUPING | {"and", "or", "unless", "bool", "offset", "inf", "nan"}


@dataclass
class Names:
    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(expr):
        match = _TOKENS.match(expr, position)
        if not match:
            raise ValueError(f"cannot read PromQL at {expr[position:]!r}")
        position = match.end()
        if match.lastgroup != "space":
            yield match.lastgroup or "", match.group()


def promql_names(expr: str) -> Names:
    """The metric names an expression selects, and the label names it matches or groups on."""
    names = Names()
    tokens = list(_tokens(expr))
    braces = 0
    grouping = False  # inside the parentheses of by (...), on (...) and the like
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif text == ")" and grouping:
            grouping = False
        elif kind == "string" and braces and tokens[i - 2][1] == "__name__":
            names.metrics.add(text[1:-1])
        elif kind != "ident":
            continue
        elif braces or grouping:
            if text != "__name__":
                names.labels.add(text)
        elif text.lower() in _GROUPING and following == "(":
            grouping = True
        elif text.lower() not in _KEYWORDS and following.lower() not in {"(", *_AGGREGATION_CLAUSES}:
            names.metrics.add(text)
    return names


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            'sum by (model, le) (rate(transformer_decode_seconds_bucket{model!="by"}[5m]))',
            {"transformer_decode_seconds_bucket"},
            {"model", "le"},
        ),
        (
            "histogram_quantile(0.95, sum(rate(x_bucket[5m:1m])) by (le)) > bool 1e3",
            {"x_bucket"},
            {"le"},
        ),
        (
            "a / on (instance) group_left (job) b offset 1h30m and c @ start()",
            {"a", "b", "c"},
            {"instance", "job"},
        ),
        ('absent(nv_x{model="sum(y)"}) or vector(1) unless {__name__="up"}', {"nv_x", "up"},
         {"model"}),
        ("count without (pod) (kube:pods:sum) * -0x1F", {"kube:pods:sum"}, {"pod"}),
    ],
)
def test_promql_names_tells_metrics_from_functions_labels_and_strings(
    expr: str, metrics: set[str], labels: set[str]
) -> None:
    assert promql_names(expr) == Names(metrics, labels)


@pytest.fixture(scope="module")
def rules() -> dict:
    """The PrometheusRule's spec, as the production values render it."""
    (rule,) = [d for d in render(PRODUCTION) if d["kind"] == "PrometheusRule"]
    return rule["spec"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    (configmap,) = [d for d in render(PRODUCTION) if d["kind"] == "ConfigMap"]
    (text,) = configmap["data"].values()
    return json.loads(text)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool missing: run `make prometheus` (make test does)")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def rules_file(rules: dict, tmp_path: Path) -> Path:
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def test_rendered_rules_pass_promtool_check(rules_file: Path) -> None:
    result = promtool("check", "rules", rules_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rejects_a_broken_rule(rules: dict, tmp_path: Path) -> None:
    broken = json.loads(json.dumps(rules))
    broken["groups"][1]["rules"][0]["expr"] = "sum by (service_name (rate(x[5m]))"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", path).returncode != 0


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_expect(
    rules: dict, rules_file: Path
) -> None:
    shutil.copy(RULE_TESTS, rules_file.parent)
    result = promtool("test", "rules", rules_file.parent / RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def recording_rules(rules: dict) -> dict[str, list[dict]]:
    """The recording rules by the name they record (one name may have several)."""
    found: dict[str, list[dict]] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.setdefault(rule["record"], []).append(rule)
    return found


def expressions(rules: dict, dashboard: dict) -> dict[str, str]:
    """Every expression an operator sees, by where it is: alerts and dashboard panels."""
    found = {
        f"alert {rule['alert']}": rule["expr"]
        for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return found


def reached(expr: str, records: dict[str, list[dict]]) -> Iterator[tuple[Names, set[str]]]:
    """The expression's own names (recorded ones left out), with the labels the recorded
    series it reads may carry; then the same for each recording rule it reads, recursively."""
    own = promql_names(expr)
    read = own.metrics & records.keys()
    produced = {
        label
        for name in read for rule in records[name]
        for label in promql_names(rule["expr"]).labels | set(rule.get("labels", {}))
    }
    yield Names(own.metrics - read, own.labels), produced
    for name in read:
        for rule in records[name]:
            yield from reached(rule["expr"], records)


@dataclass
class Exported:
    """What a /metrics page offers: the series names it may carry, by its TYPE lines, and
    the label names seen on each name's samples."""

    names: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)
    values: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
            self.names.update(name + s for s in suffixes.get(kind, ("",)))
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)
                self.values.update(sample.labels.values())


@pytest.fixture(scope="module")
def exported(
    transformer_url: str, triton: TritonPorts, fake_commons: FakeCommons
) -> Iterator[tuple[Exported, Exported]]:
    """The model server's and Triton's metrics after traffic through every stage: Commons
    lookups (one answered 503, then retried), downloads, decoding, Triton, item errors."""
    fake_commons.add_file("Monitoring check.jpg", images.encode(images.photo(480, 360, 41), "JPEG"))
    fake_commons.fail_api(times=1, status=503, retry_after=0.1)
    inline = base64.b64encode(images.encode(images.photo(320, 240, 42), "PNG")).decode()
    with httpx.Client(base_url=transformer_url, timeout=120) as client:
        for model, instances in (
            ("logo-detection", [{"filename": "Monitoring check.jpg"}, {"image": inline}]),
            ("nsfw-detection", [{"image": inline}, {"image": "bm90IGFuIGltYWdl"}]),
        ):
            answer = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
            assert answer.status_code == 200, answer.text
        server = Exported()
        server.add(client.get("/metrics").text)
    served = Exported()
    served.add(httpx.get(f"http://{triton.address}:{triton.metrics}/metrics", timeout=30).text)
    yield server, served


def test_every_metric_of_the_dashboard_and_alerts_is_exported(
    rules: dict, dashboard: dict, exported: tuple[Exported, Exported]
) -> None:
    server, triton = exported
    records = recording_rules(rules)
    missing, unknown_labels = [], []
    for where, expr in expressions(rules, dashboard).items():
        for names, produced in reached(expr, records):
            allowed = TARGET_LABELS | produced
            for metric in names.metrics:
                if metric in CLUSTER_ONLY:
                    allowed |= CLUSTER_ONLY[metric][1]
                elif metric in server.names or metric in triton.names:
                    allowed |= server.labels.get(metric, set()) | triton.labels.get(metric, set())
                else:
                    missing.append(f"{where}: {metric}")
            # Labels show only on samples: a metric with none yet (no admission refusal
            # happened) cannot be held to its labels.
            sampled = all(
                m in CLUSTER_ONLY or m in server.labels or m in triton.labels for m in names.metrics
            )
            if sampled and not names.labels <= allowed:
                unknown_labels.append(f"{where}: {sorted(names.labels - allowed)}")
    assert not missing, "metrics nobody exports:\n" + "\n".join(missing)
    assert not unknown_labels, "labels those metrics lack:\n" + "\n".join(unknown_labels)


def test_the_check_meets_every_source_and_knows_histogram_series(
    rules: dict, dashboard: dict, exported: tuple[Exported, Exported]
) -> None:
    """The check above is not vacuous: it meets the model server's, Triton's and the
    cluster's metrics, and a histogram is known by its series, not its family name."""
    server, triton = exported
    records = recording_rules(rules)
    used = {
        metric
        for expr in expressions(rules, dashboard).values()
        for names, _ in reached(expr, records) for metric in names.metrics
    }
    assert used & server.names and used & triton.names
    assert used & CLUSTER_ONLY.keys() == CLUSTER_ONLY.keys()
    assert {"transformer_decode_seconds_bucket", "transformer_decode_seconds_count"} <= server.names
    assert not {"transformer_decode_seconds", "transformer_decode_seconds_total"} & server.names
    assert "transformer_admission_rejections_total" in server.names


def test_the_model_servers_labels_are_bounded(exported: tuple[Exported, Exported]) -> None:
    server, _ = exported
    ours = {name: labels for name, labels in server.labels.items()
            if name.startswith(("transformer_", "request_"))}
    assert ours, "no model server metric had samples"
    assert set().union(*ours.values()) <= BOUNDED_LABELS
    leaked = [v for v in server.values if "Monitoring check" in v or "127.0.0.1" in v]
    assert not leaked, f"titles or hosts as label values: {leaked}"
