"""`make gpu-bench DRY_RUN=1`: the GPU benchmark's whole path on CPU in seconds, its outputs,
and the 64 MiB budget of what a GPU machine must receive."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from loadtests.gpu_bench import bundle, ceiling
from loadtests.gpu_bench.batcher import DynamicBatcher, drive
from preprocessing.specs import SPECS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu-bench")
    # Its prerequisites are the released logo model (assembled in seconds) and the NSFW
    # export, which `make test` has just built; nothing trains.
    command = ["make", "--no-print-directory", "gpu-bench", "DRY_RUN=1",
               f"GPU_BENCH_DIR={out}"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


def test_dry_run_writes_every_section(dry_run: Path) -> None:
    results = json.loads((dry_run / "results" / "results.json").read_text())
    names = {spec.name for spec in SPECS}
    assert results["dry_run"] is True and not results["notes"]
    assert {(r["model"], r["precision"], r["batch"]) for r in results["model_only"]} == {
        (name, precision, batch) for name in names for precision in ("fp32", "bf16") for batch in (1, 2)
    }
    assert all(r["eager"]["images_per_s"] > 0 for r in results["model_only"])
    for section in ("numerics", "ceiling", "end_to_end"):
        assert {row["model"] for row in results[section]} == names
    assert {(b["model"], b["concurrency"]) for b in results["batching"]} == {
        (name, c) for name in names for c in (1, 4)
    }
    for n in results["numerics"]:
        # The converted FP32 graph is the exported ONNX graph: ONNX Runtime agrees to float noise.
        assert n["max_abs_diff_fp32_vs_onnxruntime"] < 1e-5
        assert n["images"] == 6 and 0 <= n["decisions_flipped"] <= 6
    assert all(c["gflop_per_image"] > 0.1 for c in results["ceiling"])
    for e in results["end_to_end"]:
        assert e["images_per_s"] > 0 and 0 < e["decode_share"] <= 1
    markdown = (dry_run / "results" / "results.md").read_text()
    for heading in ("**Model only**", "**Ceiling**", "**Numerics**", "**Dynamic batching**", "**End to end**"):
        assert heading in markdown
    assert "not Triton" in markdown and "DRY RUN" in markdown


def test_bundle_fits_the_budget(dry_run: Path) -> None:
    manifest = json.loads((dry_run / "bundle" / "manifest.json").read_text())
    size = manifest["size"]
    assert size["total_bytes"] <= bundle.BUDGET_BYTES == 64 * 1024 * 1024
    assert size["bundle_bytes"] == bundle.files_bytes(dry_run / "bundle") - len(
        (dry_run / "bundle" / "manifest.json").read_bytes())
    for spec in SPECS:
        assert (dry_run / "bundle" / manifest["models"][spec.name]).stat().st_size > 1_000_000
    assert len(manifest["images"]) == bundle.PHOTOS + bundle.LOGOS
    assert manifest["wheels"] or manifest["missing_wheels"] == [bundle.pillow_requirement()]


def test_budget_counts_missing_wheels_and_fails_above_64_mib(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\0" * 1000)
    small = bundle.budget(tmp_path, ["pillow==13.0.0"], tree_bytes=500)
    assert small["total_bytes"] == 1500 + bundle.WHEEL_ALLOWANCE_BYTES and small["fits"]
    with open(tmp_path / "big.onnx", "wb") as big:
        big.truncate(bundle.BUDGET_BYTES)
    assert not bundle.budget(tmp_path, [], tree_bytes=None)["fits"]


@pytest.mark.parametrize(("name", "row"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"),
    ("Tesla T4", "T4"), ("NVIDIA A10G", None),
])
def test_peak_table_matches_device_names(name: str, row: str | None) -> None:
    found = ceiling.known_peak(name)
    assert (found[0] if found else None) == row


def test_batcher_coalesces_and_answers_each_request_in_order() -> None:
    calls: list[int] = []

    def runner(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return images[:, :1].astype(np.float32)

    async def scenario() -> tuple[list[np.ndarray], int]:
        async with DynamicBatcher([runner], max_batch=4, max_delay_s=0.05) as batcher:
            answers = await asyncio.gather(*(batcher.infer(np.array([i, 0])) for i in range(10)))
            images, _, _ = await drive(batcher, [np.array([7, 0])], concurrency=3, seconds=0.1)
        return answers, images

    answers, images = asyncio.run(scenario())
    assert [float(a[0]) for a in answers] == list(range(10))
    assert calls[:3] == [4, 4, 2] and max(calls) <= 4 and images > 0
