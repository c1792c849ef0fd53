"""Results → Markdown tables ready for docs/PERFORMANCE.md."""

from __future__ import annotations


def _table(header: list[str], rows: list[list[object]], text_columns: int = 2) -> list[str]:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _mode(point: dict | None, key: str) -> object:
    return None if point is None else point[key]


def markdown(results: dict) -> str:
    env, gpu = results["environment"], results["gpu"]
    half = results["half_precision"]
    lines = [
        f"### GPU benchmark: {gpu['name']}" + (" (DRY RUN on CPU: not GPU figures)" if results["dry_run"] else ""),
        "",
        f"`{results['command']}`: torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, "
        f"{env['cpu_count']} CPU cores, {results['elapsed_s']} s.",
        "",
        "**Model only** (PyTorch from the exported ONNX, input already on the device, every call "
        "synchronised; FP32 with TF32 off):",
        "",
    ]
    lines += _table(
        ["model", "precision", "batch", "eager img/s", "eager p50 ms", "eager p99 ms",
         "CUDA graph img/s", "graph p50 ms", "graph p99 ms"],
        [[r["model"], r["precision"], r["batch"], r["eager"]["images_per_s"], r["eager"]["p50_ms"],
          r["eager"]["p99_ms"], _mode(r["cuda_graph"], "images_per_s"), _mode(r["cuda_graph"], "p50_ms"),
          _mode(r["cuda_graph"], "p99_ms")] for r in results["model_only"]],
    )
    lines += [f"**Ceiling** (FLOPs per image ÷ the GPU's dense FP16 peak; best {half} figure above):", ""]
    lines += _table(
        ["model", "GFLOP/image", "GPU (table row)", "dense FP16 TFLOP/s", "ideal img/s",
         f"best {half} img/s", "fraction of ideal"],
        [[c["model"], c["gflop_per_image"], (c["peak"] or {}).get("gpu", "unknown"),
          (c["peak"] or {}).get("dense_fp16_tflops"), c["ideal_images_per_s"],
          c[f"best_{half}_images_per_s"], c["fraction_of_ideal"]] for c in results["ceiling"]],
        text_columns=3,
    )
    lines += [f"**Numerics** ({half} vs FP32 on {results['numerics'][0]['images'] if results['numerics'] else 0} "
              f"evaluation images; a decision is score ≥ 0.5):", ""]
    lines += _table(
        ["model", "images", f"max abs diff {half} vs FP32", "decisions flipped", "FP32 vs ONNX Runtime"],
        [[n["model"], n["images"], f"{n['max_abs_diff']:.2e}", n["decisions_flipped"],
          f"{n['max_abs_diff_fp32_vs_onnxruntime']:.2e}"] for n in results["numerics"]],
    )
    lines += [f"**Dynamic batching** ({results['batcher_kind']}; {half}, one image per request):", ""]
    lines += _table(
        ["model", "max batch", "instances", "queue delay µs", "concurrency", "img/s", "p50 ms", "p99 ms",
         "mean batch"],
        [[b["model"], b["max_batch"], b["instances"], b["queue_delay_us"], b["concurrency"],
          b["images_per_s"], b["p50_ms"], b["p99_ms"], b["mean_batch"]] for b in results["batching"]],
    )
    lines += ["**End to end** (the transformer's decode + tensor code on a thread per CPU core, "
              f"feeding the batcher; {half}; evaluation images, no HTTP):", ""]
    lines += _table(
        ["model", "decode threads", "concurrency", "img/s", "p50 ms", "p99 ms", "decode share",
         "decode ms/image", "decode threads busy", "mean batch"],
        [[e["model"], e["decode_threads"], e["concurrency"], e["images_per_s"], e["p50_ms"], e["p99_ms"],
          e["decode_share"], e["decode_ms_per_image"], e["decode_threads_busy"], e["mean_batch"]]
         for e in results["end_to_end"]],
    )
    if results["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in results["notes"]] + [""]
    return "\n".join(lines)
