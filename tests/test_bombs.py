"""Hostile input against the decoders: memory checked before it is allocated, animations
checked before Pillow reaches a frame, and a wall-time budget per video.

Peak memory is measured in a fresh interpreter (Pillow's buffers are invisible to
tracemalloc): the kernel's high-water mark of resident memory, reset just before decoding.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools import images, videos
from preprocessing.decode import (
    DEFAULT_MAX_DECODE_BYTES,
    DecodeError,
    _orientation,
    decode_image,
    peak_bytes,
)
from transformer.video import pipeline
from transformer.video.errors import VideoError
from transformer.video.limits import VideoLimits
from transformer.video.pipeline import ScoringOptions
from transformer.video.sampling import scan_video

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

_MEASURE = """
import io, json, sys
from PIL import Image
from preprocessing.decode import DecodeError, decode_image

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

warm = io.BytesIO()
Image.new("RGB", (2, 2)).save(warm, format="PNG")
decode_image(warm.getvalue())  # imports every plugin before measuring
data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the high-water mark to the current resident memory
start = status("VmRSS:")
try:
    outcome = list(decode_image(data, max_decode_bytes=int(sys.argv[2])).size)
except DecodeError as exc:
    outcome = exc.code
print(json.dumps({"peak": status("VmHWM:") - start, "outcome": outcome}))
"""


def measure(data: bytes, tmp_path: Path, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> dict:
    """Decode ``data`` in a fresh interpreter: the peak memory it added, and the size
    decoded or the error code."""
    path = tmp_path / "input"
    path.write_bytes(data)
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(max_decode_bytes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def estimate(data: bytes) -> int:
    img = Image.open(io.BytesIO(data))
    return peak_bytes(img, data, img.size, _orientation(img, loaded=False))


# --- still images ---------------------------------------------------------------------------

GIANTS: dict[str, Callable[[], bytes]] = {
    "16-bit PNG": images.sixteen_bit_png,
    "palette PNG": images.palette_png,
    "RGBA PNG": images.rgba_png,
    "float TIFF": images.float_tiff,
    "32-bit TIFF": images.int32_tiff,
    "CMYK TIFF": images.cmyk_tiff,
    "progressive JPEG": images.progressive_jpeg_header,
}


@pytest.mark.parametrize("name", list(GIANTS))
def test_giants_are_refused_before_decoding(name: str, tmp_path: Path) -> None:
    data = GIANTS[name]()  # 7000×7000: under the pixel limit, over the memory budget
    assert len(data) < 256 * 1024
    limit = f"more than the limit of {DEFAULT_MAX_DECODE_BYTES}"
    with pytest.raises(DecodeError, match=limit) as raised:
        decode_image(data)
    assert raised.value.code == "image_too_large"
    measured = measure(data, tmp_path)
    assert measured["outcome"] == "image_too_large"
    assert measured["peak"] < 32 * MiB


def test_sixteen_bit_giant_stays_within_a_raised_budget(tmp_path: Path) -> None:
    data = images.sixteen_bit_png(7000)
    budget = 400 * MiB
    measured = measure(data, tmp_path, budget)
    assert measured["outcome"] == [7000, 7000]
    assert measured["peak"] <= estimate(data) <= budget


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return images.encode(images.photo(3000, 2000, 9), "JPEG", exif=exif.tobytes())


MEASURED: dict[str, Callable[[], bytes]] = {
    "16-bit PNG": lambda: images.sixteen_bit_png(3000),
    "palette PNG": lambda: images.palette_png(3000),
    "RGBA PNG": lambda: images.rgba_png(3000),
    "float TIFF": lambda: images.float_tiff(3000),
    "CMYK TIFF": lambda: images.cmyk_tiff(3000),
    "progressive JPEG": lambda: images.encode(
        images.photo(3000, 2000, 9), "JPEG", progressive=True, subsampling=0
    ),
    "rotated JPEG": _rotated_jpeg,
    "WebP": lambda: images.encode(images.photo(3000, 2000, 9), "WEBP"),
}


@pytest.mark.parametrize("name", list(MEASURED))
def test_the_estimate_covers_the_measured_peak(name: str, tmp_path: Path) -> None:
    data = MEASURED[name]()
    measured = measure(data, tmp_path, 2**40)
    assert isinstance(measured["outcome"], list)
    assert measured["peak"] <= estimate(data)


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda: videos.growing_canvas_gif(), (64, 64)),
        (lambda: images.later_frame_giant_tiff(), (64, 48)),
    ],
    ids=["GIF growing canvas", "TIFF giant second page"],
)
def test_still_images_never_reach_later_frames(
    make: Callable[[], bytes], size: tuple[int, int], tmp_path: Path
) -> None:
    measured = measure(make(), tmp_path)
    assert measured["outcome"] == list(size)
    assert measured["peak"] < 32 * MiB


def _reference_rgb(img: Image.Image) -> np.ndarray:
    """The whole-image conversion the tiled one must equal: nominal range → 0..255."""
    arr = np.asarray(img)
    if img.mode == "F":
        top = 1.0 if arr.max() <= 1.0 else 255.0
        grey = np.clip(np.rint(np.clip(arr, 0.0, top) * (255.0 / top)), 0, 255)
    else:
        full = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        grey = np.clip(np.rint(arr.astype(np.float64) * (255.0 / full)), 0, 255)
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_tiled_conversion_equals_the_whole_image_one(orientation: int, dtype: type) -> None:
    rng = np.random.default_rng(orientation)
    values = rng.integers(-50, 70000, (700, 1100)).astype(dtype)  # several tiles each way
    if dtype is np.uint16:
        values = rng.integers(0, 65536, (700, 1100)).astype(dtype)
    img = Image.fromarray(values)
    exif = Image.Exif()
    exif[0x0112] = orientation
    fmt = "PNG" if dtype is np.uint16 else "TIFF"
    expected = Image.fromarray(_reference_rgb(img))
    if orientation > 1:
        expected = expected.transpose(
            {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}[orientation]  # Image.Transpose values
        )
    decoded = decode_image(images.encode(img, fmt, exif=exif.tobytes()))
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(expected))


def test_truncated_giant_is_an_image_error() -> None:
    with pytest.raises(DecodeError) as raised:
        decode_image(images.truncated(images.sixteen_bit_png(1000)))
    assert raised.value.code == "corrupt_image"


# --- videos ---------------------------------------------------------------------------------

LIMITS = VideoLimits(max_duration_s=600.0, max_pixels=2_000_000, max_frames=300)


def scan(data: bytes, limits: VideoLimits = LIMITS) -> None:
    scan_video(data, limits, lambda image: None, lambda sample: None)


def test_growing_gif_canvas_is_refused_before_pillow_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow opened the GIF"))
    with pytest.raises(VideoError, match="frame 2 of the GIF") as raised:
        scan(videos.growing_canvas_gif())
    assert raised.value.code == "video_too_large"
    assert "13000x13000" in raised.value.message


def test_gif_frame_count_is_bounded_before_seeking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow opened the GIF"))
    limits = VideoLimits(max_duration_s=1.0, max_pixels=2_000_000, max_frames=300)
    with pytest.raises(VideoError, match="more than 120 frames") as raised:
        scan(videos.many_frames_gif(121), limits)
    assert raised.value.code == "video_too_large"


@pytest.mark.parametrize(
    ("make", "budget_s"),
    [(videos.many_frames_gif, 2.0), (lambda: videos.long_video(600.0), 0.05)],
    ids=["3000-frame GIF", "long video"],
)
def test_work_budget_bounds_the_scan(make: Callable[[], bytes], budget_s: float) -> None:
    data = make()
    limits = VideoLimits(600.0, 2_000_000, 300, budget_s=budget_s)
    started = time.perf_counter()
    try:
        scan(data, limits)
    except VideoError as exc:
        assert exc.code == "video_budget_exceeded"
        assert f"over the per-video budget of {budget_s:g} s" in exc.message
    assert time.perf_counter() - started <= budget_s + 1.0


def test_long_video_is_cut_by_a_tiny_budget() -> None:
    limits = VideoLimits(600.0, 2_000_000, 300, budget_s=0.05)
    with pytest.raises(VideoError, match=r"decoding stopped after \d+\.\d s") as raised:
        scan(videos.long_video(600.0), limits)
    assert raised.value.code == "video_budget_exceeded"


def test_unexpected_exceptions_are_not_video_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure the bytes cannot explain is ours: it must reach the caller (a 500)."""

    def broken(image: Image.Image) -> np.ndarray:
        raise RuntimeError("a bug in preprocessing")

    async def scorer(batch: np.ndarray) -> np.ndarray:
        return np.zeros(len(batch))

    async def run() -> None:
        with ThreadPoolExecutor(1) as executor:
            await pipeline.score_video(
                videos.encode(videos.PHOTO_THEN_SKIN),
                limits=LIMITS,
                options=ScoringOptions(),
                scorer=scorer,
                executor=executor,
                max_chunk=8,
            )

    monkeypatch.setattr(pipeline, "nsfw_tensor", broken)
    with pytest.raises(RuntimeError, match="a bug in preprocessing"):
        asyncio.run(run())
