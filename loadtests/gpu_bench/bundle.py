"""Build what a GPU machine needs beyond its preinstalled PyTorch, numpy, onnx and ONNX
Runtime, and hold it to the size budget: ``python -m loadtests.gpu_bench.bundle --out DIR``.

The bundle holds the two exported models (constant-folded FP32 ONNX: both together fit, so
FP16 is made on the GPU from the FP32 weights rather than shipped), the evaluation images
(encoded, so the end-to-end run decodes them), and a Pillow wheel for the machine's
Python, since ``preprocessing.decode`` needs Pillow. The code itself travels with the
working tree. Runs here (``make gpu-bench`` assembles the released logo model first, in
seconds); never on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from loadtests.gpu_bench.convert import fold
from preprocessing.specs import LOGO, NSFW, SPECS

ROOT = Path(__file__).resolve().parents[2]
# The served models: the released logo model, as `make serve` serves it.
MODELS = {LOGO.name: ROOT / "build/logo-release/model.onnx", NSFW.name: ROOT / "build/nsfw/model.onnx"}
WHEEL_CACHE = ROOT / "build/gpu-bench/wheels"
BUDGET_BYTES = 64 * 1024 * 1024
# The GPU machine's interpreter (CPython 3.12, x86-64 glibc) and the Pillow we serve with.
WHEEL_TARGET = ("--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64")
# When the wheel cannot be fetched (offline), the budget counts this instead: the measured
# size of pillow-13.0.0-cp312 manylinux_2_28 (7 144 542 bytes), rounded up.
WHEEL_ALLOWANCE_BYTES = 8 * 1024 * 1024
PHOTOS = 24
LOGOS = 24


def pillow_requirement() -> str:
    return f"pillow=={version('pillow')}"


def fetch_wheel(requirement: str, cache: Path) -> Path | None:
    """The cached wheel, else ``pip download`` it; None when that fails (no network)."""
    name, wanted = requirement.split("==")
    cached = sorted(cache.glob(f"{name}-{wanted}-cp312-*.whl"))
    if cached:
        return cached[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *WHEEL_TARGET,
               "--dest", str(cache), requirement]
    try:
        subprocess.run(command, check=True, timeout=120, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    cached = sorted(cache.glob(f"{name}-{wanted}-cp312-*.whl"))
    return cached[0] if cached else None


def write_images(folder: Path) -> list[str]:
    """Photos (JPEG thumbnails as Commons serves them) and logos (PNG with alpha)."""
    from loadtests import payloads

    folder.mkdir(parents=True, exist_ok=True)
    items = payloads.thumbs(PHOTOS) + payloads.logos(LOGOS)
    for name, data in items:
        (folder / name).write_bytes(data)
    return sorted(name for name, _ in items)


def files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def working_tree_bytes() -> int | None:
    """Tracked and untracked-not-ignored files: what travels besides the bundle."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                                check=True, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = (ROOT / name for name in listed.decode().split("\0") if name)
    return sum(p.stat().st_size for p in paths if p.is_file())


def budget(bundle: Path, missing_wheels: list[str], tree_bytes: int | None) -> dict:
    bundle_bytes = files_bytes(bundle)
    used = bundle_bytes + WHEEL_ALLOWANCE_BYTES * len(missing_wheels) + (tree_bytes or 0)
    return {"budget_bytes": BUDGET_BYTES, "bundle_bytes": bundle_bytes,
            "missing_wheel_allowance_bytes": WHEEL_ALLOWANCE_BYTES * len(missing_wheels),
            "working_tree_bytes": tree_bytes, "total_bytes": used, "fits": used <= BUDGET_BYTES}


def build(out: Path, models: dict[str, Path] = MODELS, wheel_cache: Path = WHEEL_CACHE) -> dict:
    """Write the bundle to ``out`` (replacing it) and return its manifest; raises if over budget."""
    if out.exists():
        shutil.rmtree(out)
    for spec in SPECS:
        fold(models[spec.name], out / "models" / f"{spec.name}.onnx")
    images = write_images(out / "images")
    requirement = pillow_requirement()
    wheel = fetch_wheel(requirement, wheel_cache)
    missing = [] if wheel else [requirement]
    if wheel:
        (out / "wheels").mkdir()
        shutil.copyfile(wheel, out / "wheels" / wheel.name)
    manifest = {
        "models": {spec.name: f"models/{spec.name}.onnx" for spec in SPECS},
        "images": [f"images/{name}" for name in images],
        "wheels": [f"wheels/{wheel.name}"] if wheel else [],
        "missing_wheels": missing,
        "size": budget(out, missing, working_tree_bytes()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not manifest["size"]["fits"]:
        raise SystemExit(f"bundle over budget: {manifest['size']}")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build/gpu-bench/bundle")
    args = parser.parse_args()
    size = build(args.out)["size"]
    print(f"[gpu-bench] bundle {args.out}: {size['total_bytes'] / 2**20:.1f} MiB of "
          f"{BUDGET_BYTES / 2**20:.0f} MiB (bundle {size['bundle_bytes'] / 2**20:.1f} MiB, "
          f"working tree {(size['working_tree_bytes'] or 0) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
