"""``python -m loadtests.bench_video``: where the time of one 60 s 480p H.264 video goes.

The clip is made with PyAV (cached in ``build/bench/``): 854×480, 30 fps, x264 ``veryfast``
CRF 23, a new textured scene every 5 s with a slow pan and sensor-like noise, about
1.9 Mbit/s (a typical 480p web encode). Then, each
``--repeat`` times, medians reported:

decode       PyAV decoding every frame, nothing else (FFmpeg's own threads, as the service);
scan         ``transformer.video.sampling.scan_video``: decoding, scene detection on 160 px
             frames and ``nsfw_tensor`` of the sampled frames, with its own split (``Timings``: CPU
             seconds of scene detection and of preprocessing, the rest of the wall time);
inference    the sampled frames' tensors through open_nsfw on ONNX Runtime, 2 threads,
             batches of 32: what Triton's CPU instance does with them;
in-process   ``transformer.video.pipeline.score_video`` with ONNX Runtime in this process
             (``transformer.video.cli``): decoding and inference overlap;
stack        with ``--stack``: Triton and the transformer as subprocesses, the clip POSTed
             as base64 JSON to ``nsfw-video-detection``, without early exit.

Every number is wall time on whatever else the machine is doing; run it on a quiet one.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import onnxruntime as ort
import psutil
import typer
from PIL import Image

from preprocessing.specs import NSFW, VIDEO_MODEL
from preprocessing.tensor import nsfw_tensor
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE
from transformer.config import load_settings
from transformer.video.cli import DEFAULT_MODEL, OnnxScorer
from transformer.video.limits import VideoLimits
from transformer.video.pipeline import ScoringOptions, score_video
from transformer.video.sampling import Sample, Scan, scan_video

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "build" / "bench" / "clip_60s_480p.mp4"
WIDTH, HEIGHT, FPS, SECONDS, SCENE_S = 854, 480, 30, 60, 5

app = typer.Typer(add_completion=False)


def make_clip(path: Path) -> bytes:
    """The benchmark clip: textured scenes with a pan, so the encoder has real work."""
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        # Sensor noise that changes every frame: what makes real footage cost bits.
        noise = rng.normal(0, 6, size=(8, HEIGHT, WIDTH, 1))
        for index in range(SECONDS * FPS):
            if index % (SCENE_S * FPS) == 0:
                scene = _scene(rng)
            shift = (index % (SCENE_S * FPS)) * 2
            pixels = np.clip(scene[:, shift : shift + WIDTH] + noise[index % len(noise)], 0, 255)
            frame = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return out.getvalue()


def _scene(rng: np.random.Generator) -> np.ndarray:
    width = WIDTH + SCENE_S * FPS * 2
    coarse = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, HEIGHT), Image.Resampling.BICUBIC))
    grain = rng.normal(0, 24, size=(HEIGHT, width, 1))
    return np.clip(base + grain, 0, 255).astype(np.uint8)


@dataclass
class Timing:
    """Wall seconds of each run; CPU seconds per run (all threads of the processes timed),
    which a busy neighbour on the machine inflates far less than wall time."""

    runs: list[float]
    cpu_s: float
    result: Any

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def timed(
    fn: Callable[[], Any], repeat: int, cpu: Callable[[], float] = time.process_time
) -> Timing:
    runs, result = [], None
    cpu_started = cpu()
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - started)
    return Timing(runs, (cpu() - cpu_started) / repeat, result)


def decode_only(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def scan(data: bytes, limits: VideoLimits) -> tuple[Scan, list[np.ndarray]]:
    samples: list[Sample[np.ndarray]] = []
    result = scan_video(data, limits, nsfw_tensor, samples.append)
    return result, [s.value for s in samples]


def onnx_session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = NSFW.cpu_intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(DEFAULT_MODEL), options, providers=["CPUExecutionProvider"])


def infer(session: ort.InferenceSession, tensors: list[np.ndarray]) -> int:
    batch = np.stack(tensors)
    for start in range(0, len(batch), NSFW.max_batch_size):
        session.run(None, {"image": batch[start : start + NSFW.max_batch_size]})
    return len(batch)


def in_process(data: bytes, limits: VideoLimits, scorer: OnnxScorer) -> int:
    async def run() -> int:
        with ThreadPoolExecutor(1) as executor:
            scored = await score_video(
                data,
                limits=limits,
                options=ScoringOptions(),
                scorer=scorer,
                executor=executor,
                max_chunk=NSFW.max_batch_size,
            )
        return scored.report.frames_scored

    return asyncio.run(run())


def through_stack(data: bytes, repeat: int) -> Timing:
    instance = {"filename": CLIP.name, "video": base64.b64encode(data).decode()}
    # Encoded once, so the timings are the server's, not this client's JSON encoder's.
    body = json.dumps({"instances": [instance]}).encode()
    headers = {"Content-Type": "application/json"}
    with (
        Stack(models=[VIDEO_MODEL], env=WITHOUT_SCORE_STORE, logs=ROOT / "build" / "bench") as served,
        httpx.Client(base_url=served.url, timeout=120) as client,
    ):
        path = f"/v1/models/{VIDEO_MODEL}:predict"
        client.post(path, content=body, headers=headers).raise_for_status()  # warm-up

        def post() -> dict:
            response = client.post(path, content=body, headers=headers)
            response.raise_for_status()
            return response.json()["predictions"][0]

        return timed(post, repeat, _servers_cpu_seconds)


def _servers_cpu_seconds() -> float:
    """User + system CPU of this process's children: Triton (with its Python-backend
    stubs) and the transformer."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _row(name: str, timing: Timing, note: str) -> None:
    spread = ", ".join(f"{r:.2f}" for r in timing.runs)
    typer.echo(
        f"{name:<11} {timing.median:5.2f} s  CPU {timing.cpu_s:5.2f} s  runs [{spread}]  {note}"
    )


@app.command()
def main(
    repeat: int = typer.Option(5, min=1, help="Runs per measurement; the median is reported."),
    stack: bool = typer.Option(False, help="Also time the clip through Triton + the transformer."),
    regenerate: bool = typer.Option(False, help="Make the clip again even if it is cached."),
) -> None:
    """Time decode, scene detection and inference for a 60 s 480p H.264 clip."""
    data = CLIP.read_bytes() if CLIP.exists() and not regenerate else make_clip(CLIP)
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        size = f"{stream.width}x{stream.height} {stream.codec_context.name}"
        rate = f"{float(stream.average_rate or 0):g} fps, {SECONDS} s"
        megabits = len(data) * 8 / SECONDS / 1e6
        typer.echo(f"clip: {CLIP.relative_to(ROOT)}, {size} {rate}, {megabits:.1f} Mbit/s")
    settings = load_settings()
    limits = VideoLimits.from_settings(settings)

    timing = timed(lambda: decode_only(data), repeat)
    _row("decode", timing, f"{timing.result} frames")

    scans: list[Scan] = []

    def scan_once() -> list[np.ndarray]:
        result, tensors = scan(data, limits)
        scans.append(result)
        return tensors

    timing = timed(scan_once, repeat)
    tensors = timing.result
    split = {
        part: statistics.median(getattr(s.timings, f"{part}_s") for s in scans)
        for part in ("scenes", "prepare", "decode")
    }
    _row(
        "scan",
        timing,
        f"{len(tensors)} frames sampled, {scans[-1].scene_cuts} cuts; medians: scene detection "
        f"{split['scenes']:.2f} s CPU, nsfw_tensor {split['prepare']:.2f} s CPU, "
        f"the rest (decoding) {split['decode']:.2f} s",
    )

    session = onnx_session()
    timing = timed(lambda: infer(session, tensors), repeat)
    _row(
        "inference",
        timing,
        f"{timing.result} frames, ONNX Runtime, {NSFW.cpu_intra_op_threads} threads",
    )

    scorer = OnnxScorer(DEFAULT_MODEL)
    timing = timed(lambda: in_process(data, limits, scorer), repeat)
    _row("in-process", timing, f"{timing.result} frames scored, decoding and inference overlapping")

    if stack:
        timing = through_stack(data, repeat)
        _row("stack", timing, f"{timing.result['frames_scored']} frames scored, HTTP + Triton")


if __name__ == "__main__":
    app()
