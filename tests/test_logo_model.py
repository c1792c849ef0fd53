"""The exported logo detector (build/logo/model.onnx, built by `make test` beforehand).

Checks the serving contract of the graph, its parity with the torch model it came from,
and that it tells held-out logos from held-out photo crops (test split, never trained on).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from predictor.logo import LABELS
from predictor.logo.export import INPUT, OUTPUT, TOLERANCE, max_difference, session
from predictor.logo.model import LogoDetector
from predictor.logo.train import roc_auc

BUILD = Path(__file__).resolve().parents[1] / "build" / "logo"
MODEL = BUILD / "model.onnx"
ARTEFACTS = (MODEL, BUILD / "head.pt", BUILD / "test_sample.npz", BUILD / "manifest.jsonl")


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    missing = [str(path) for path in ARTEFACTS if not path.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build/logo/model.onnx` first")


@pytest.fixture(scope="module")
def ort_session():
    return session(MODEL)


@pytest.fixture(scope="module")
def detector() -> LogoDetector:
    model = LogoDetector()
    model.head.load_state_dict(torch.load(BUILD / "head.pt", weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    with np.load(BUILD / "test_sample.npz") as saved:
        return {key: saved[key] for key in saved.files}


def test_signature(ort_session) -> None:
    (image,) = ort_session.get_inputs()
    assert (image.name, image.type) == (INPUT, "tensor(uint8)")
    assert isinstance(image.shape[0], str) and image.shape[1:] == [224, 224, 3]
    (scores,) = ort_session.get_outputs()
    assert (scores.name, scores.type) == (OUTPUT, "tensor(float)")
    assert isinstance(scores.shape[0], str) and scores.shape[1:] == [2]


def test_opset_and_labels() -> None:
    model = onnx.load(str(MODEL), load_external_data=False)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in model.metadata_props}["labels"] == ",".join(LABELS)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("kind", ["random", "real"])
def test_parity_with_torch(kind: str, batch: int, detector, sample) -> None:
    if kind == "random":
        images = np.random.default_rng(batch).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    else:
        images = sample["images"][:batch]
    assert max_difference(MODEL, detector, images) <= TOLERANCE


def test_scores_are_softmax_and_batch_independent(ort_session, sample) -> None:
    images = sample["images"][:5]
    (batched,) = ort_session.run(None, {INPUT: images})
    assert batched.dtype == np.float32 and batched.shape == (5, 2)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    singles = np.concatenate([ort_session.run(None, {INPUT: images[i : i + 1]})[0] for i in range(5)])
    np.testing.assert_allclose(batched, singles, atol=1e-6)


def test_sample_is_held_out(sample) -> None:
    splits = {}
    with (BUILD / "manifest.jsonl").open() as manifest:
        for line in manifest:
            row = json.loads(line)
            splits[row["id"]] = row["split"]
    assert {splits[item_id] for item_id in sample["ids"]} == {"test"}
    assert set(sample["labels"].tolist()) == {0, 1}


def test_separates_held_out_logos_from_photos(ort_session, sample) -> None:
    (scores,) = ort_session.run(None, {INPUT: sample["images"]})
    logo = scores[:, LABELS.index("logo")]
    labels = sample["labels"]
    assert ((logo >= 0.5) == (labels == 1)).mean() >= 0.9
    assert roc_auc(logo, labels) >= 0.95
