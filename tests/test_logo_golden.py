"""logo-detection over HTTP scores exactly what the exported ONNX file scores in-process.

The reference is the very file Triton serves (found from the version the response names),
run with ONNX Runtime on the same bytes decoded and letterboxed by the project's own
functions. Equality to 1e-5 pins everything between the wire and the scores: that the
logo model gets the letterbox tensor (not the NSFW one), that the batch is not reordered,
and that ``prediction`` is the ``logo`` column of the output, ``out_of_domain`` the other.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from devtools import images
from preprocessing.decode import decode_image
from preprocessing.specs import LOGO, ONNX_FILENAME
from preprocessing.tensor import LOGO_MIN_SIDE, logo_tensor, nsfw_tensor
from tests.conftest import MODEL_REPOSITORY

LOGO_PATH = f"/v1/models/{LOGO.name}:predict"
TOLERANCE = 1e-5


def golden_files() -> list[tuple[str, bytes]]:
    """Logo renders with and without alpha, photos, banners and icons, JPEG, PNG and GIF,
    sized to take every decode path (draft-scaled JPEG, EXIF rotation, palette, upscaling)."""
    return [
        ("Mark_alpha.png", images.encode(images.logo(256, 256, 0), "PNG")),
        ("Mark_alpha_large.png", images.encode(images.logo(900, 900, 3), "PNG")),
        ("Wordmark_alpha.png", images.encode(images.logo(600, 160, 1), "PNG")),
        ("Wordmark.jpg", images.encode(images.logo(1200, 240, 4, alpha=False), "JPEG", quality=90)),
        ("Icon_48.png", images.encode(images.logo(48, 48, 2), "PNG")),
        ("Favicon_64.gif", images.encode(images.logo(64, 64, 6, alpha=False), "GIF")),
        ("Photo.jpg", images.encode(images.photo(640, 480, 300), "JPEG", quality=90)),
        ("Photo_12mp.jpg", images.encode(images.photo(4000, 3000, 303), "JPEG", quality=90)),
        ("Photo.png", images.encode(images.photo(300, 400, 402), "PNG")),
        ("Photo_square.jpg", images.encode(images.photo(1024, 1024, 300), "JPEG", quality=90)),
        ("Photo_banner.jpg", images.encode(images.photo(1500, 250, 500), "JPEG", quality=85)),
        ("Photo_exif_rotated.jpg", images.exif_rotated_jpeg(302)),
    ]


def served(client: httpx.Client, files: list[tuple[str, bytes]]) -> tuple[list[dict], str]:
    """The predictions for ``files`` sent inline in one request, and the model version."""
    instances = [{"filename": n, "image": base64.b64encode(d).decode()} for n, d in files]
    response = client.post(LOGO_PATH, json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [n for n, _ in files]
    return predictions, response.headers["x-model-version"]


def onnx_scores(version: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(MODEL_REPOSITORY / LOGO.name / version / ONNX_FILENAME),
        providers=["CPUExecutionProvider"],
    )
    (scores,) = session.run([LOGO.output_name], {LOGO.input_name: batch})
    return scores


def test_served_logo_scores_equal_the_exported_onnx_on_the_same_tensor(
    client: httpx.Client,
) -> None:
    files = golden_files()
    predictions, version = served(client, files)
    decoded = [decode_image(data, min_side=LOGO_MIN_SIDE) for _, data in files]
    expected = onnx_scores(version, np.stack([logo_tensor(img) for img in decoded]))
    logo, other = LOGO.labels.index("logo"), LOGO.labels.index("out_of_domain")
    got = np.array([[p["prediction"], p["out_of_domain"]] for p in predictions])

    # The set must tell the columns and the preprocessing apart, or equality proves little:
    # clear logos and clear non-logos (a swapped output reads 1 - p), and images whose
    # NSFW-preprocessed tensor (stretch, crop, JPEG) scores differently.
    assert (expected[:, logo] > 0.8).sum() >= 2 and (expected[:, logo] < 0.2).sum() >= 2
    wrong_tensor = onnx_scores(version, np.stack([nsfw_tensor(img) for img in decoded]))
    assert (np.abs(wrong_tensor[:, logo] - expected[:, logo]) > 1e-3).sum() >= len(files) // 2

    for (name, _), (prediction, out_of_domain), row in zip(files, got, expected, strict=True):
        assert prediction == pytest.approx(row[logo], abs=TOLERANCE), name
        assert out_of_domain == pytest.approx(row[other], abs=TOLERANCE), name
    worst = np.abs(got[:, 0] - expected[:, logo]).max()
    print(f"\nlogo golden, {len(files)} files: max abs diff {worst:.3g}")
