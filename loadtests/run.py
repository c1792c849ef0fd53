"""`make loadtest`: a headless Locust run, its report, and a regression gate that holds on
any machine of a CPU model it has a baseline for.

Without ``--url`` it starts what `make serve` starts (Triton + transformer on the built
model repository) plus a local MediaWiki-API server (devtools/fake_commons.py) hosting the
payload images, all on the first ``--cpus`` CPUs; with ``--url`` it loads that deployment.

**Calibration.** Absolute requests/s and latencies say as much about the machine as about
the code, so the gate never compares them with another machine's. Each step of the load
(``users:seconds``) is cut into ``--rounds`` rounds, and before each round and after the
last, the same number of users call Triton directly for ``--calibration-seconds``: one
image tensor of the same payloads per request, the models taking turns (the model-only
ceiling at the same concurrency). Every load request is divided by the calibrations around
its round, on the same machine a few seconds apart, so a slower or faster machine, or one
that slows down as the run goes on, changes both alike. Per endpoint (Locust request name)
that gives, in the calibration's unit (`analyse`):

* ``mean``, ``p50``, ``p95``: latency over the unit;
* ``rps``: requests/s over what the step's users would make if each call took the unit.

``loadtests/baseline.json`` holds these ratios per users and concurrency of each step
(`plan_key`), and per CPU model where one is recorded (`baseline_for`); the gate flags
every endpoint whose ``mean`` or ``rps`` moved by more than ``--tolerance`` (10 %) in
either direction, or whose failure ratio rose by more than a point (`gate`). ``--repeat``
runs the steps again on the same stack and takes the medians. CPU-bound neighbours and
another CPU microarchitecture are what the calibration does not cancel
(docs/PERFORMANCE.md): the run measures the neighbours' share of its CPUs and warns. A
deployment (``--url``) has no Triton to calibrate against: its run reports absolute
figures and fails only on failed requests.

Writes ``<out>/stats_*.csv`` and ``report.html`` (Locust; calibration requests included,
under their own name), ``samples.json`` (every request), ``throughput.png``,
``latency.png`` and ``summary.json``.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Self

import httpx
import numpy as np
import psutil
import typer

from loadtests import payloads
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment

if TYPE_CHECKING:
    from devtools.fake_commons import FakeCommons

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("baseline.json")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_NAMES = Path(__file__).with_name("commons_names.txt")
CALIBRATION_USER = "TritonCalibration"
CALIBRATION = "calibration: Triton direct"
AGGREGATED = "Aggregated"
# Mean latency and requests/s, each over the calibration's. The mean, not a percentile:
# every request counts in it, a slower tail moves it; p50 and p95 are reported, and p95 over
# a few hundred requests moves by more than 10 % between identical runs.
GATED = ("mean", "rps")
WARM_UP_S = 3.0
# Above this share of the CPUs' busy time taken by other processes, the run says that its
# ratios are not to be trusted.
BUSY_MACHINE = 0.1
FAILURE_MARGIN = 0.01


def write_payloads(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    images = payloads.thumbs(24) + payloads.logos(24) + payloads.large(2)
    for name, data in images + payloads.clips(2):
        (directory / name).write_bytes(data)
    return [name for name, _ in images]


def aggregate(stats_csv: Path) -> dict[str, float]:
    """The "Aggregated" row of a Locust stats CSV (`make soak` reports it)."""
    with open(stats_csv, newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    requests = int(row["Request Count"])
    return {
        "requests": requests,
        "requests_per_s": round(float(row["Requests/s"]), 2),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "failure_ratio": round(int(row["Failure Count"]) / max(1, requests), 4),
    }


def parse_steps(steps: str) -> list[tuple[int, float]]:
    return [
        (int(users), float(seconds)) for users, seconds in (s.split(":") for s in steps.split(","))
    ]


def plan_key(users: str, steps: str) -> str:
    """What a baseline's ratios depend on: the users and each step's concurrency. Seconds,
    rounds and repeats only make them more precise."""
    return f"{users} at {','.join(str(count) for count, _ in parse_steps(steps))} users"


def cpu_model() -> str:
    """The CPU's vendor, family and model (its microarchitecture): the ratios moved by 13-25 %
    on another CPU model with no code change, presumably because its vector units speed the
    models and the transformer's Python unequally (docs/PERFORMANCE.md)."""
    fields: dict[str, str] = {}
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    vendor, family, model = (fields.get(k, "?") for k in ("vendor_id", "cpu family", "model"))
    return f"{vendor} family {family} model {model}"


def own_key(key: str) -> str:
    """The plan's baseline for this CPU model: what ``--update-baseline`` writes."""
    return f"{key} on {cpu_model()}"


def baseline_for(stored: dict, key: str) -> tuple[str, dict | None]:
    """This CPU model's baseline for the plan where one is recorded, else the plan's
    unlabelled one (recorded before baselines were per CPU model, on a CPU not recorded)."""
    own = own_key(key)
    if own in stored["plans"]:
        return own, stored["plans"][own]
    return key, stored["plans"].get(key)


def plan_phases(
    users: str, steps: str, rounds: int, calibration_s: float, calibrate: bool, repeat: int = 1
) -> list[dict]:
    """A warm-up (its figures are dropped: the first calls after a start are slower), then
    ``repeat`` times, per step: calibration, load, calibration, load, …, calibration."""
    classes = users.split(",")
    parsed = parse_steps(steps)

    def phase(kind: str, run: int, step: int, count: int, seconds: float) -> dict:
        return {
            "kind": kind,
            "run": run,
            "step": step,
            "users": count,
            "seconds": seconds,
            "classes": [CALIBRATION_USER] if kind == "calibration" else classes,
        }

    first = parsed[0][0]
    phases = [phase("warm-up", -1, -1, first, WARM_UP_S)]
    if calibrate:
        phases.append({**phase("calibration", -1, -1, first, WARM_UP_S), "kind": "warm-up"})
    for run in range(repeat):
        for step, (count, seconds) in enumerate(parsed):
            for _ in range(rounds):
                if calibrate:
                    phases.append(phase("calibration", run, step, count, calibration_s))
                phases.append(phase("load", run, step, count, seconds / rounds))
            if calibrate:
                phases.append(phase("calibration", run, step, count, calibration_s))
    return phases


class CpuMeter:
    """Samples, five times a second, the CPU seconds this process and its descendants (the
    stand-in's threads, the stack, Locust) have used, and the busy seconds of ``cpus``."""

    def __init__(self, cpus: list[int], period_s: float = 0.2) -> None:
        self.cpus = cpus
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _ours(self) -> float:
        me = psutil.Process()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def _busy(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        busy = 0
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in self.cpus:
                values = [int(v) for v in fields]
                busy += sum(values[:8]) - values[3] - values[4]
        return busy / ticks

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append((time.time(), self._ours(), self._busy()))

    def between(self, start: float, end: float) -> tuple[float, float]:
        """CPU seconds (ours, all of ``cpus``) from ``start`` to ``end``, interpolated."""
        times = [t for t, _, _ in self.samples]

        def at(column: int, moment: float) -> float:
            return float(np.interp(moment, times, [s[column] for s in self.samples]))

        return at(1, end) - at(1, start), at(2, end) - at(2, start)


def run_locust(
    out: Path, phases: list[dict], env: dict[str, str], classes: list[str]
) -> tuple[list[list[float]], list[list]]:
    """One Locust process through all phases; the phases' windows and every request."""
    samples_path = out / "samples.json"
    samples_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--csv",
        str(out / "stats"),
        "--csv-full-history",
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "120",
        *classes,
    ]
    env = {
        **os.environ,
        **env,
        "LOADTEST_PHASES": json.dumps(phases),
        "LOADTEST_SAMPLES": str(samples_path),
    }
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    if not samples_path.exists():
        raise RuntimeError("Locust wrote no samples: see its output above")
    recorded = json.loads(samples_path.read_text())
    if len(recorded["windows"]) != len(phases):
        raise RuntimeError(f"Locust ran {len(recorded['windows'])} of {len(phases)} phases")
    return recorded["windows"], recorded["samples"]


def by_phase(
    windows: list[list[float]], samples: list[list]
) -> list[list[tuple[str, float, bool]]]:
    """Each phase's requests (name, ms, ok), by the window they started in."""
    starts = [start for start, _ in windows]
    phased: list[list[tuple[str, float, bool]]] = [[] for _ in windows]
    for name, started, ms, ok, _ in samples:
        index = bisect.bisect_right(starts, started) - 1
        if index >= 0 and started <= windows[index][1]:
            phased[index].append((name, ms, ok))
    return phased


def _figures(latencies: list[float], failures: int, seconds: float) -> dict:
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 3),
        "mean_ms": round(float(np.mean(latencies)), 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "failure_ratio": round(failures / len(latencies), 4),
    }


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean without the lowest and highest ``cut`` of the values."""
    ordered = np.sort(values)
    drop = int(len(ordered) * cut)
    return float(np.mean(ordered[drop : len(ordered) - drop]))


def combine_steps(steps: dict[int, dict], weights: dict[int, float]) -> dict[str, float]:
    """One run's ratios for one endpoint: per step, its rounds pooled (each request over the
    unit of the calibrations around its round; a round holds too few of a mix's rare
    requests for a statistic of its own), then the steps' average, weighted by the load
    seconds the plan gives them."""
    per_step = {
        step: {
            "mean": float(np.mean(pooled["ratios"])),
            "p50": float(np.percentile(pooled["ratios"], 50)),
            "p95": float(np.percentile(pooled["ratios"], 95)),
            "rps": pooled["requests"] / pooled["expected"],
        }
        for step, pooled in steps.items()
    }
    total = sum(weights[step] for step in per_step)
    return {
        metric: sum(weights[step] * figures[metric] for step, figures in per_step.items()) / total
        for metric in ("mean", "p50", "p95", "rps")
    }


def analyse(
    phases: list[dict],
    windows: list[list[float]],
    samples: list[list],
    cpu: list[tuple[float, float]],
) -> dict:
    """Absolute figures per endpoint (all load phases) and per step; with calibrations, each
    endpoint's ratios (`combine_steps` within a run, then the median over runs)."""
    phased = by_phase(windows, samples)
    seconds = [max(end - start, 1e-9) for start, end in windows]
    calibrations = {}
    for i, phase in enumerate(phases):
        if phase["kind"] == "calibration":
            good = [ms for _, ms, ok in phased[i] if ok]
            if not good:
                raise RuntimeError(f"calibration phase {i} had no successful request")
            # A trimmed mean: the median of calls to two models of different cost jumps
            # between them, and a few calls a burst delays must not move the unit.
            calibrations[i] = {
                "users": phase["users"],
                "unit_ms": trimmed_mean(good),
                "rps": len(good) / seconds[i],
                "cpu_s": cpu[i][0],
                "images": len(good),
            }

    latencies: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    by_step: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    step_failures: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    step_seconds: dict[int, float] = defaultdict(float)
    # Endpoint → run → step → the ratios of its requests, how many, and how many the
    # calibration's unit would allow ``users`` in the same seconds.
    pooled: dict[str, dict[int, dict[int, dict]]] = defaultdict(
        lambda: defaultdict(
            lambda: defaultdict(lambda: {"ratios": [], "requests": 0, "expected": 0.0})
        )
    )
    weights: dict[int, float] = defaultdict(float)
    work: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for i, phase in enumerate(phases):
        if phase["kind"] != "load":
            continue
        step_seconds[phase["step"]] += seconds[i]
        named: dict[str, list[float]] = defaultdict(list)
        for name, ms, ok in phased[i]:
            for key in (name, AGGREGATED):
                named[key].append(ms)
                latencies[key].append(ms)
                failures[key] += not ok
                by_step[phase["step"]][key].append(ms)
                step_failures[phase["step"]][key] += not ok
        around = [calibrations[j] for j in (i - 1, i + 1) if j in calibrations]
        if not around:
            continue
        unit_ms = float(np.mean([c["unit_ms"] for c in around]))
        if phase["run"] == 0:
            weights[phase["step"]] += phase["seconds"]
        for key, ms in named.items():
            entry = pooled[key][phase["run"]][phase["step"]]
            entry["ratios"].extend(np.asarray(ms) / unit_ms)
            entry["requests"] += len(ms)
            entry["expected"] += seconds[i] * phase["users"] * 1000 / unit_ms
        spent = work[phase["run"]]
        spent["cpu_s"] += cpu[i][0]
        spent["requests"] += len(phased[i])
        spent["calibration_cpu_s"] += float(np.mean([c["cpu_s"] for c in around]))
        spent["calibration_images"] += float(np.mean([c["images"] for c in around]))

    load_seconds = sum(step_seconds.values())
    endpoints = {
        name: _figures(ms, failures[name], load_seconds) for name, ms in sorted(latencies.items())
    }
    for name, entry in endpoints.items():
        runs = [combine_steps(steps, weights) for steps in pooled[name].values()]
        if runs:
            entry["ratios"] = {m: round(float(np.median([r[m] for r in runs])), 4) for m in runs[0]}
        if len(runs) > 1:
            entry["ratios_by_run"] = [{m: round(r[m], 4) for m in GATED} for r in runs]
    steps = {
        str(next(p["users"] for p in phases if p["step"] == step)): {
            name: _figures(ms, step_failures[step][name], step_seconds[step])
            for name, ms in sorted(named.items())
        }
        for step, named in sorted(by_step.items())
    }
    ours = sum(c for c, _ in cpu)
    busy = sum(b for _, b in cpu)
    result = {
        "endpoints": endpoints,
        "by_users": steps,
        "calibration": [
            {"users": c["users"], "unit_ms": round(c["unit_ms"], 2), "rps": round(c["rps"], 2)}
            for _, c in sorted(calibrations.items())
        ],
        # Of the busy CPU time of the run's CPUs, the share that other processes took.
        "other_cpu_share": round(max(0.0, 1 - ours / busy), 3) if busy else None,
        # CPUs' worth of time this run's processes, and all processes, used in each phase.
        "phases": [
            {
                "kind": phase["kind"],
                "users": phase["users"],
                "seconds": round(sec, 2),
                "cpus_ours": round(cpu[i][0] / sec, 3),
                "cpus_busy": round(cpu[i][1] / sec, 3),
            }
            for i, (phase, sec) in enumerate(zip(phases, seconds, strict=True))
        ],
    }
    costs = [
        (w["cpu_s"] / w["requests"]) / (w["calibration_cpu_s"] / w["calibration_images"])
        for w in work.values()
        if w["requests"] and w["calibration_cpu_s"]
    ]
    if costs:
        # CPU seconds per load request over CPU seconds per calibration image: the work a
        # request costs in model-only images, whatever share of the CPUs the run got.
        result["cpu_per_request_in_calibration_images"] = round(float(np.median(costs)), 3)
    return result


def gate(
    current: dict[str, dict[str, float]],
    baseline: dict[str, dict[str, float]],
    tolerance: float,
) -> list[str]:
    """What moved by more than ``tolerance`` either way, per endpoint and ratio, and failure
    ratios that rose by more than `FAILURE_MARGIN`. Both sides map an endpoint to its
    ratios (`GATED`) and ``failure_ratio``."""
    problems = []
    for name, base in sorted(baseline.items()):
        now = current.get(name)
        if now is None:
            problems.append(f"{name}: no requests in this run")
            continue
        for metric in GATED:
            change = now[metric] / base[metric] - 1
            # The epsilon keeps a change of exactly the tolerance inside it.
            if abs(change) > tolerance + 1e-9:
                problems.append(
                    f"{name}: {metric} ratio {now[metric]:.4g} against {base[metric]:.4g} ({change:+.1%})"
                )
        if now["failure_ratio"] > base["failure_ratio"] + FAILURE_MARGIN:
            problems.append(
                f"{name}: failure ratio {now['failure_ratio']:.2%} against {base['failure_ratio']:.2%}"
            )
    for name in sorted(current.keys() - baseline.keys()):
        problems.append(f"{name}: not in the baseline (record one with --update-baseline)")
    return problems


def gated_figures(endpoints: dict[str, dict]) -> dict[str, dict[str, float]]:
    return {
        name: {**e["ratios"], "failure_ratio": e["failure_ratio"]}
        for name, e in endpoints.items()
        if "ratios" in e
    }


def failures_only(endpoints: dict[str, dict]) -> list[str]:
    return [
        f"{name}: failure ratio {e['failure_ratio']:.2%}"
        for name, e in sorted(endpoints.items())
        if e["failure_ratio"] > FAILURE_MARGIN
    ]


def plot(
    phases: list[dict], windows: list[list[float]], samples: list[list], out: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = windows[0][0]
    phased = by_phase(windows, samples)
    horizon = int(windows[-1][1] - start) + 2
    load = np.zeros(horizon)
    calibration = np.zeros(horizon)
    users = np.zeros(horizon)
    for (w_start, w_end), phase in zip(windows, phases, strict=True):
        users[int(w_start - start) : int(w_end - start) + 1] = phase["users"]
    for name, started, *_ in samples:
        second = int(started - start)
        if 0 <= second < horizon:
            (calibration if name == CALIBRATION else load)[second] += 1

    written = []
    fig, left = plt.subplots(figsize=(9, 4))
    left.plot(load, label="load requests/s")
    left.plot(calibration, label="calibration requests/s", alpha=0.6)
    left.set_xlabel("seconds")
    left.set_ylabel("per second")
    right = left.twinx()
    right.plot(users, "k--", alpha=0.4)
    right.set_ylabel("users")
    left.legend(loc="upper left")
    left.set_title("Throughput (load rounds between calibrations)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    written.append(out / "throughput.png")
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(9, 4))
    for kind, marker in (("load", "o"), ("calibration", "x")):
        middles, p50, p95 = [], [], []
        for (w_start, w_end), phase, requests in zip(windows, phases, phased, strict=True):
            ms = [m for _, m, _ in requests]
            if phase["kind"] == kind and ms:
                middles.append((w_start + w_end) / 2 - start)
                p50.append(np.percentile(ms, 50))
                p95.append(np.percentile(ms, 95))
        axis.plot(middles, p50, marker, label=f"{kind} p50")
        axis.plot(middles, p95, marker, label=f"{kind} p95", alpha=0.5)
    axis.set_xlabel("seconds")
    axis.set_ylabel("ms")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("Latency per phase")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    written.append(out / "latency.png")
    plt.close(fig)
    return written


def pin_cpus(count: int) -> list[int]:
    """Keep this process and its children (the stack, Locust) on ``count`` CPUs, so they
    compete for cores alike on every machine; 0 keeps them all."""
    allowed = sorted(os.sched_getaffinity(0))
    if count:
        allowed = allowed[:count]
        os.sched_setaffinity(0, allowed)
    return allowed


def start_local_services(exits: ExitStack, out: Path, names_dir: Path) -> tuple[FakeCommons, Stack]:
    """The MediaWiki stand-in serving ``names_dir``, then Triton and the transformer, all on
    free ports and closed by ``exits``: (stand-in, stack)."""
    from devtools.fake_commons import FakeCommons

    files = {p.name: p.read_bytes() for p in sorted(names_dir.iterdir())}
    commons = exits.enter_context(FakeCommons(files))
    env = {**commons_environment(commons.api_url), **WITHOUT_SCORE_STORE}
    stack = exits.enter_context(Stack(env=env, logs=out))
    # The stand-in renders a thumbnail when it is first asked for: all of them now, or the
    # first round of lookups by name would pay for it.
    images = [name for name in files if Path(name).suffix in (".jpg", ".png")]
    for start in range(0, len(images), 50):
        instances = [{"filename": name} for name in images[start : start + 50]]
        httpx.post(
            f"{stack.url}/v1/models/logo-detection:predict",
            json={"instances": instances},
            timeout=120,
        ).raise_for_status()
    return commons, stack


def start_local_stack(exits: ExitStack, out: Path, names_dir: Path) -> Stack:
    """`start_local_services` without the stand-in's handle (`make soak` needs none)."""
    return start_local_services(exits, out, names_dir)[1]


def locust_env(
    url: str, host: str, payload_dir: Path, names: list[str], triton_url: str = ""
) -> dict[str, str]:
    env = {
        "LOADTEST_URL": url,
        "LOADTEST_PAYLOADS": str(payload_dir),
        "LOADTEST_TRITON_URL": triton_url,
        "LOADTEST_HOST_HEADER": host,
    }
    if names:
        env["LOADTEST_COMMONS_NAMES"] = "\n".join(names)
    return env


def measure(
    out: Path, phases: list[dict], env: dict[str, str], classes: list[str], cpus: list[int]
) -> tuple[dict, list[list[float]], list[list]]:
    with CpuMeter(cpus) as meter:
        windows, samples = run_locust(out, phases, env, classes)
    cpu = [meter.between(start, end) for start, end in windows]
    return analyse(phases, windows, samples, cpu), windows, samples


def load_baseline(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"plans": {}}


def main(
    url: str = typer.Option("", help="Deployment to load; empty starts a local stack."),
    host: str = typer.Option(
        "", help="Host header, e.g. logo-detection.example.org behind an ingress."
    ),
    names: Path = typer.Option(
        None,
        help="Commons file names for lookups by name, one a line "
        "(a deployment's default: loadtests/commons_names.txt).",
    ),
    users: str = typer.Option("MixedUser", help="Locust user classes, comma-separated."),
    steps: str = typer.Option("2:20,8:20,16:30", help="users:seconds of load per step."),
    rounds: int = typer.Option(4, help="Load rounds per step, each between two calibrations."),
    calibration_seconds: float = typer.Option(3.0, help="Seconds per calibration."),
    repeat: int = typer.Option(
        3, help="Run the steps this often; the ratios are the medians (1: quicker, noisier)."
    ),
    cpus: int = typer.Option(2, help="CPUs the local stack and Locust share; 0: all."),
    out: Path = typer.Option(Path("build/loadtest")),
    tolerance: float = typer.Option(0.10, help="Allowed change of each ratio, either way."),
    baseline: Path = typer.Option(BASELINE, help="Baseline ratios, per plan."),
    update_baseline: bool = typer.Option(
        False, help="Store this run's ratios as the plan's baseline."
    ),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload_dir = out / "payloads"
    hosted = write_payloads(payload_dir)
    classes = users.split(",")
    phases = plan_phases(
        users, steps, rounds, calibration_seconds, calibrate=not url, repeat=repeat
    )
    started = time.monotonic()
    with ExitStack() as exits:
        if url:
            listed = (names or DEFAULT_NAMES).read_text().splitlines()
            env = locust_env(url, host, payload_dir, listed)
            allowed = sorted(os.sched_getaffinity(0))
        else:
            allowed = pin_cpus(cpus)
            if len(allowed) < cpus:
                typer.echo(
                    f"warning: {len(allowed)} CPU(s), not {cpus}: the baseline's ratios were "
                    "measured on 2 and move on fewer (docs/PERFORMANCE.md)",
                    err=True,
                )
            stack = start_local_stack(exits, out, payload_dir)
            env = locust_env(
                stack.url, host, payload_dir, hosted, f"http://127.0.0.1:{stack.triton_ports.http}"
            )
            classes.append(CALIBRATION_USER)
        result, windows, samples = measure(out, phases, env, classes, allowed)

    key = plan_key(users, steps)
    summary = {
        "plan": key,
        "repeat": repeat,
        "url": url or "local stack",
        "cpus": len(allowed),
        "seconds": round(time.monotonic() - started, 1),
        "command": " ".join(["python -m loadtests.run", *sys.argv[1:]]),
        **result,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for path in plot(phases, windows, samples, out):
        typer.echo(f"wrote {path}")
    typer.echo(report(result))
    if (result["other_cpu_share"] or 0) > BUSY_MACHINE:
        typer.echo(
            f"warning: other processes took {result['other_cpu_share']:.0%} of these CPUs' busy "
            "time; ratios shift when the machine is shared (docs/PERFORMANCE.md)",
            err=True,
        )

    if url:
        problems = failures_only(result["endpoints"])
        verdict = (
            "no endpoint failed (a deployment is not compared with the baseline: no calibration)"
        )
    else:
        stored = load_baseline(baseline)
        if update_baseline:
            key = own_key(key)
            stored["plans"][key] = {
                "command": summary["command"],
                "cpus": len(allowed),
                "repeat": repeat,
                "other_cpu_share": result["other_cpu_share"],
                "cpu_per_request_in_calibration_images": result.get(
                    "cpu_per_request_in_calibration_images"
                ),
                "endpoints": gated_figures(result["endpoints"]),
            }
            baseline.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
            typer.echo(f"baseline for {key!r} updated: {baseline}")
            return
        key, plan = baseline_for(stored, key)
        if plan is None:
            typer.echo(
                f"no baseline for {key!r} in {baseline}: run with --update-baseline", err=True
            )
            raise typer.Exit(1)
        problems = gate(gated_figures(result["endpoints"]), plan["endpoints"], tolerance)
        verdict = f"no endpoint moved by more than {tolerance:.0%} against {baseline} ({key!r})"
    if problems:
        typer.echo(f"REGRESSION against {key!r}:\n  " + "\n  ".join(problems), err=True)
        raise typer.Exit(1)
    typer.echo(verdict)


def report(result: dict) -> str:
    lines = [
        "endpoint | requests | req/s | mean ms | p50 ms | p95 ms | failures | ratios: mean | p50 | p95 | rps"
    ]
    for name, e in result["endpoints"].items():
        r = e.get("ratios", {})
        ratios = " | ".join(str(r.get(m, "-")) for m in ("mean", "p50", "p95", "rps"))
        lines.append(
            f"{name} | {e['requests']} | {e['rps']} | {e['mean_ms']} | {e['p50_ms']} | "
            f"{e['p95_ms']} | {e['failure_ratio']:.2%} | {ratios}"
        )
    if "cpu_per_request_in_calibration_images" in result:
        lines.append(
            "CPU per load request, in calibration images: "
            f"{result['cpu_per_request_in_calibration_images']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
