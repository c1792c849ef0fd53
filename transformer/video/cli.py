"""``python -m transformer.video.cli FILE``: score a local video, print the JSON answer.

The same pipeline as ``nsfw-video-detection`` (decode, sampling, ``nsfw_tensor``,
aggregation), with the NSFW model run in this process on ONNX Runtime from the file Triton
serves on CPU (``model_repository/nsfw-detection/1/model.onnx``): no server needed, and
scores equal the service's. Limits come from the service's environment variables
(``MAX_VIDEO_BYTES``, ``MAX_VIDEO_DURATION_S``, …). A progress bar on stderr follows the
decoded time when a file takes more than half a second and stderr is a terminal.
Exit status: 0 scored, 1 the video cannot be scored (the JSON says why).
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import typer
from tqdm import tqdm

from preprocessing.specs import NSFW, ONNX_FILENAME
from transformer.config import load_settings
from transformer.video.errors import VideoError
from transformer.video.limits import VideoLimits
from transformer.video.pipeline import DEFAULT_THRESHOLD, ScoringOptions, score_video
from transformer.video.report import VideoReport

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
DEFAULT_MODEL = REPOSITORY / NSFW.name / str(NSFW.version) / ONNX_FILENAME

app = typer.Typer(add_completion=False)


class OnnxScorer:
    """open_nsfw on ONNX Runtime in this process, on its own thread (ORT releases the GIL)."""

    def __init__(self, model: Path) -> None:
        self._session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._nsfw = NSFW.labels.index("nsfw")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="onnx")

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0][:, self._nsfw]


async def score_file(
    data: bytes, limits: VideoLimits, options: ScoringOptions, scorer: OnnxScorer, bar: tqdm
) -> VideoReport:
    def progress(decoded_s: float, duration_s: float) -> None:
        bar.total = round(duration_s, 1)
        bar.update(round(decoded_s, 1) - bar.n)  # tqdm redraws at most every 0.1 s

    with ThreadPoolExecutor(1, thread_name_prefix="video") as executor:
        scored = await score_video(
            data,
            limits=limits,
            options=options,
            scorer=scorer,
            executor=executor,
            max_chunk=NSFW.max_batch_size,
            progress=progress,
        )
    return scored.report


def score_path(file: Path, options: ScoringOptions, model: Path) -> VideoReport:
    """Score ``file`` under the service's limits; raises `VideoError`."""
    settings = load_settings()
    size = file.stat().st_size  # before reading: the file may be far over the limit
    if size > settings.max_video_bytes:
        raise VideoError(
            "video_too_large", f"{size} bytes exceeds the {settings.max_video_bytes}-byte limit"
        )
    data = file.read_bytes()
    limits = VideoLimits.from_settings(settings)
    scorer = OnnxScorer(model)
    bar = tqdm(unit="s", desc=file.name, delay=0.5, leave=False, file=sys.stderr, disable=None)
    with bar:
        return asyncio.run(score_file(data, limits, options, scorer, bar))


@app.command()
def main(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Video or animated image."),
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD, min=0.0, max=1.0, help="Flag frames scoring at least this."
    ),
    early_exit: bool = typer.Option(False, help="Stop at the first flagged frame."),
    model: Path = typer.Option(
        DEFAULT_MODEL, exists=True, dir_okay=False, help="The uint8 open_nsfw ONNX file."
    ),
) -> None:
    """Score FILE for NSFW content; print the nsfw-video-detection answer as JSON."""
    try:
        report = score_path(file, ScoringOptions(threshold, early_exit), model)
        answer = {"filename": file.name, "target": "nsfw", **report.as_dict()}
    except VideoError as exc:
        answer = {"filename": file.name, "error": {"code": exc.code, "message": exc.message}}
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    raise typer.Exit(1 if "error" in answer else 0)


if __name__ == "__main__":
    app()
