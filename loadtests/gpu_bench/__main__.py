"""``python -m loadtests.gpu_bench --out DIR [--bundle DIR] [--dry-run] [--peak-tflops T]``.

Writes ``results.json`` and ``results.md`` to ``--out``. Without ``--dry-run`` it needs a
CUDA GPU and keeps within the plan's time budget (7 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from loadtests.gpu_bench import bench, ceiling, report
from preprocessing.specs import SPECS, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
BATCHER_KIND = ("in-process dynamic batcher with Triton's policy, not Triton: the tritonserver "
                "binary comes in the nvidia-pytriton 0.7.0 wheel, 52.8 MiB, which with the two "
                "models even in FP16 (17.6 MiB) exceeds the 64 MiB a GPU machine receives")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.gpu_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for results.json and results.md.")
    parser.add_argument("--bundle", type=Path, default=ROOT / "build/gpu-bench/bundle")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny batches, seconds.")
    parser.add_argument("--peak-tflops", type=float, help="Dense FP16 peak, for a GPU not in the table.")
    return parser.parse_args()


def environment() -> dict:
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


def gpu_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": f"none (CPU: {platform.processor() or platform.machine()})"}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count}


def peak_for(gpu: dict, override: float | None) -> tuple[str, float] | None:
    if override:
        return "given with --peak-tflops", override
    return ceiling.known_peak(gpu["name"]) if "compute_capability" in gpu else None


def evaluation_tensors(bundle: Path, manifest: dict, plan: bench.Plan, notes: list[str]):
    """Per model: (names, encoded bytes, tensors, prepare), or None without Pillow."""
    try:
        from preprocessing.decode import decode_image
        from preprocessing.tensor import LOGO_MIN_SIDE, NSFW_MIN_SIDE, logo_tensor, nsfw_tensor
    except ImportError as exc:
        notes.append(f"numerics and end to end skipped: {exc} (install the bundle's wheels)")
        return None
    policies = {"logo-detection": (LOGO_MIN_SIDE, logo_tensor), "nsfw-detection": (NSFW_MIN_SIDE, nsfw_tensor)}
    names = manifest["images"]
    if plan.eval_images:
        names = names[:: max(1, len(names) // plan.eval_images)][: plan.eval_images]
    encoded = [(bundle / name).read_bytes() for name in names]
    out = {}
    for model, (min_side, to_tensor) in policies.items():
        def prepare(data: bytes, min_side=min_side, to_tensor=to_tensor) -> np.ndarray:
            return to_tensor(decode_image(data, min_side=min_side))

        out[model] = (names, encoded, np.stack([prepare(d) for d in encoded]), prepare)
    return out


def attempt(notes: list[str], what: str, phase: Callable[[], T], default: T) -> T:
    """Run one phase; a failure is noted and the other phases' figures are kept."""
    try:
        return phase()
    except Exception as exc:  # noqa: BLE001 - one GPU run is costly: keep what did work
        traceback.print_exc()
        notes.append(f"{what} failed: {bench.first_line(exc)}")
        return default


def measure_model(spec: ModelSpec, model_path: Path, device: torch.device, plan: bench.Plan,
                  clock: bench.Clock, data, peak, results: dict) -> None:
    notes = results["notes"]
    modules = bench.load_modules(model_path, plan, device)
    half = list(plan.precisions)[1]
    if data:
        names, _, tensors, _ = data
        results["numerics"] += attempt(notes, f"numerics {spec.name}", lambda: [
            bench.numerics(spec, modules, model_path, tensors, names, device)], [])
    rows = attempt(notes, f"model only {spec.name}",
                   lambda: bench.model_only(spec, modules, device, plan, clock, notes), [])
    results["model_only"] += rows
    results["ceiling"].append(bench.model_ceiling(spec, model_path, peak, rows, half))
    images = list(data[2]) if data else list(np.random.default_rng(0).integers(
        0, 256, (16, *spec.input_dims), dtype=np.uint8))
    results["batching"] += attempt(notes, f"batcher {spec.name}", lambda: asyncio.run(
        bench.batching(spec, modules[half], images, device, plan, clock)), [])
    if data and clock.allows(f"end to end {spec.name}"):
        _, encoded, _, prepare = data
        results["end_to_end"] += attempt(notes, f"end to end {spec.name}", lambda: [asyncio.run(
            bench.end_to_end(spec, modules[half], encoded, prepare, device, plan))], [])
    del modules
    bench.release(device)


def write(results: dict, out: Path, clock: bench.Clock) -> None:
    results["elapsed_s"] = round(clock.elapsed(), 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results))


def main() -> None:
    args = parse()
    plan = bench.DRY_RUN if args.dry_run else bench.FULL
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run, or on a GPU machine")
    device = torch.device("cpu" if args.dry_run else "cuda")
    # FP32 means FP32: TF32 would blur the FP16-versus-FP32 comparison.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    clock = bench.Clock(plan.budget_s)
    gpu = gpu_info(device)
    notes: list[str] = []
    results = {
        "dry_run": args.dry_run, "command": " ".join(["python -m loadtests.gpu_bench", *sys.argv[1:]]),
        "environment": environment(), "gpu": gpu, "half_precision": list(plan.precisions)[1],
        "batcher_kind": BATCHER_KIND, "bundle_size": manifest["size"],
        "gpu_peak_table_tflops": {label: tflops for _, label, tflops in ceiling.DENSE_FP16_TFLOPS},
        "model_only": [], "numerics": [], "ceiling": [], "batching": [], "end_to_end": [], "notes": notes,
    }
    data = evaluation_tensors(args.bundle, manifest, plan, notes)
    peak = peak_for(gpu, args.peak_tflops)
    if peak is None and device.type == "cuda":
        notes.append(f"{gpu['name']} is not in the peak table: pass --peak-tflops for the ceiling")
    for spec in SPECS:
        measure_model(spec, args.bundle / manifest["models"][spec.name], device, plan, clock,
                      data[spec.name] if data else None, peak, results)
        write(results, args.out, clock)  # a crash in the next model keeps this one's figures
    if clock.skipped:
        notes.append(f"over the {plan.budget_s:.0f} s budget, skipped: {', '.join(clock.skipped)}")
    write(results, args.out, clock)
    print(f"[gpu-bench] {results['elapsed_s']} s; wrote {args.out / 'results.json'} and results.md", flush=True)


if __name__ == "__main__":
    main()
