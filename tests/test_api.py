"""The transformer over HTTP, on the real Triton and the fake Commons: the public contract."""

from __future__ import annotations

import base64

import httpx
import pytest

from devtools import images

LOGO = "/v1/models/logo-detection:predict"
TRUNCATED_JPEG = images.encode(images.photo(300, 200, 5), "JPEG")[:3000]
NSFW = "/v1/models/nsfw-detection:predict"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return images.encode(images.photo(500, 400, 1), "JPEG", quality=90)


def assert_scored(prediction: dict, filename: str | None, target: str) -> None:
    assert prediction["filename"] == filename
    assert prediction["target"] == target
    assert 0.0 <= prediction["prediction"] <= 1.0
    assert prediction["prediction"] + prediction["out_of_domain"] == pytest.approx(1.0, abs=1e-5)


def test_readiness(client: httpx.Client) -> None:
    for name in ("logo-detection", "nsfw-detection"):
        response = client.get(f"/v1/models/{name}")
        assert response.status_code == 200
        assert response.json() == {"name": name, "ready": True}


def test_liveness_on_every_route_kserve_serves(client: httpx.Client) -> None:
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_lift_wing_request_shape(client: httpx.Client, jpeg: bytes) -> None:
    body = {"instances": [{"filename": "Kanion_Co.png", "image": b64(jpeg), "target": "logo"}]}
    response = client.post(LOGO, json=body)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert_scored(prediction, "Kanion_Co.png", "logo")


def test_model_version_is_echoed_in_a_header(client: httpx.Client, jpeg: bytes) -> None:
    from tests.conftest import MODEL_REPOSITORY

    served = {d.name for d in (MODEL_REPOSITORY / "logo-detection").iterdir() if d.is_dir()}
    response = client.post(LOGO, json={"instances": [{"image": b64(jpeg)}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] in served


def test_nsfw_target_defaults_to_nsfw(client: httpx.Client, jpeg: bytes) -> None:
    response = client.post(NSFW, json={"instances": [{"image": b64(jpeg)}]})
    assert response.status_code == 200, response.text
    assert_scored(response.json()["predictions"][0], None, "nsfw")


def test_body_without_json_content_type(client: httpx.Client, jpeg: bytes) -> None:
    body = httpx.Request("POST", "/", json={"instances": [{"image": b64(jpeg)}]}).content
    response = client.post(LOGO, content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_filename_spellings_resolve_to_the_same_file(
    client: httpx.Client, fake_commons
) -> None:
    names = ["File:Portrait_photo.jpg", "Portrait photo.jpg", "portrait_photo.jpg"]
    before = len(fake_commons.file_requests)
    response = client.post(LOGO, json={"instances": [{"filename": n} for n in names]})
    assert response.status_code == 200, response.text
    scores = [p["prediction"] for p in response.json()["predictions"]]
    assert [p["filename"] for p in response.json()["predictions"]] == names
    assert scores[0] == pytest.approx(scores[1], abs=1e-6) == pytest.approx(scores[2], abs=1e-6)
    # The 600x900 original is larger than the 330 px thumbnail: the thumbnail was fetched,
    # once for the three names.
    (fetched,) = [r.path for r in fake_commons.file_requests[before:]]
    assert fetched.startswith("/thumb/")


@pytest.mark.parametrize("path", [LOGO, NSFW])
def test_filename_lookup_scores_like_the_same_bytes_inline(
    client: httpx.Client, fake_commons, commons_files: dict[str, bytes], path: str
) -> None:
    """By name, the transformer downloads a rendition (a thumbnail, or the original when it
    is small); the very bytes it downloaded, sent inline, get the same scores."""
    names = ["Portrait photo.jpg", "Tiny icon.png"]
    before = len(fake_commons.file_requests)
    by_name = client.post(path, json={"instances": [{"filename": n} for n in names]})
    assert by_name.status_code == 200, by_name.text
    fetched = [r.path for r in fake_commons.file_requests[before:]]
    portrait = next(p for p in fetched if "Portrait_photo.jpg" in p)
    icon = next(p for p in fetched if "Tiny_icon.png" in p)
    assert portrait.startswith("/thumb/") and icon == "/original/Tiny_icon.png"
    downloads = [httpx.get(fake_commons.base_url + p).content for p in (portrait, icon)]
    assert downloads[1] == commons_files["Tiny icon.png"]

    inline = [{"filename": n, "image": b64(d)} for n, d in zip(names, downloads, strict=True)]
    by_bytes = client.post(path, json={"instances": inline})
    assert by_bytes.status_code == 200, by_bytes.text
    pairs = zip(by_name.json()["predictions"], by_bytes.json()["predictions"], strict=True)
    for named, sent in pairs:
        assert named["filename"] == sent["filename"]
        assert named["prediction"] == pytest.approx(sent["prediction"], abs=1e-6)
        assert named["out_of_domain"] == pytest.approx(sent["out_of_domain"], abs=1e-6)


SVG_LOGO = b"""<svg xmlns="http://www.w3.org/2000/svg" width="240" height="80" viewBox="0 0 240 80">
  <circle cx="40" cy="40" r="32" fill="#339966"/>
  <rect x="28" y="28" width="24" height="24" fill="#ffffff"/>
  <rect x="90" y="22" width="130" height="36" rx="8" fill="#006699"/>
</svg>"""


def test_svg_by_name_is_scored_from_its_rasterised_thumbnail(
    client: httpx.Client, fake_commons
) -> None:
    """Commons lists SVGs as DRAWING (image/svg+xml) and serves PNG renders of them: the
    logo model scores the render, as it would the same PNG inline."""
    fake_commons.add_file("Green mark.svg", SVG_LOGO)
    before = len(fake_commons.file_requests)
    response = client.post(LOGO, json={"instances": [{"filename": "File:Green mark.svg"}]})
    assert response.status_code == 200, response.text
    (named,) = response.json()["predictions"]
    assert_scored(named, "File:Green mark.svg", "logo")
    (render,) = [r.path for r in fake_commons.file_requests[before:]]
    # 80 px high at 240 px wide: the render is asked wide enough for a 224-px short side.
    assert render.startswith("/thumb/Green_mark.svg/") and render.endswith("px-Green_mark.svg.png")
    png = httpx.get(fake_commons.base_url + render)
    assert png.headers["content-type"] == "image/png"
    inline = client.post(LOGO, json={"instances": [{"image": b64(png.content)}]})
    (sent,) = inline.json()["predictions"]
    assert sent["prediction"] == pytest.approx(named["prediction"], abs=1e-6)


def test_redirect_and_missing_and_invalid_titles(client: httpx.Client) -> None:
    body = {
        "instances": [
            {"filename": "Old name.png"},
            {"filename": "Does not exist.jpg"},
            {"filename": "Bad|title.jpg"},
            {"filename": "Kanion_Co.png"},
        ]
    }
    response = client.post(LOGO, json=body)
    assert response.status_code == 200, response.text
    redirected, missing, invalid, direct = response.json()["predictions"]
    assert_scored(redirected, "Old name.png", "logo")
    assert redirected["prediction"] == pytest.approx(direct["prediction"], abs=1e-6)
    assert missing["error"]["code"] == "file_not_found"
    assert "Does not exist.jpg" in missing["error"]["message"]
    assert invalid["error"]["code"] == "invalid_title"


def test_mixed_good_and_bad_items_keep_request_order(client: httpx.Client, jpeg: bytes) -> None:
    instances = [
        {"filename": "a.jpg", "image": b64(jpeg)},
        {"filename": "b.jpg", "image": "%%% not base64 %%%"},
        {"filename": "c.jpg", "image": b64(jpeg[: len(jpeg) // 2])},
        {"filename": "d.png", "image": b64(images.decompression_bomb())},
        {"filename": "e.jpg"},
        {"target": "logo"},
        "not an object",
        {"filename": "h.png", "image": b64(images.encode(images.photo(64, 64, 3), "PNG"))},
    ]
    response = client.post(LOGO, json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(instances)
    assert_scored(predictions[0], "a.jpg", "logo")
    codes = [p.get("error", {}).get("code") for p in predictions]
    assert codes == [
        None,
        "invalid_base64",
        "corrupt_image",
        "image_too_large",
        "file_not_found",
        "invalid_instance",
        "invalid_instance",
        None,
    ]
    assert_scored(predictions[7], "h.png", "logo")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        # Parsed by us, in a thread, never by KServe on the event loop.
        (b'{"instances": [', "the request body is not valid JSON: unexpected end of data"),
        (b"[1, 2, 3]", '"instances"'),
        (b'{"instances": {"image": "x"}}', "must be a list"),
        (b'{"instances": []}', "empty"),
    ],
)
def test_malformed_requests_get_400(client: httpx.Client, content: bytes, needle: str) -> None:
    response = client.post(LOGO, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


def test_more_than_50_instances(client: httpx.Client) -> None:
    response = client.post(LOGO, json={"instances": [{"filename": f"{i}.jpg"} for i in range(51)]})
    assert response.status_code == 400
    assert "too many instances: 51 > 50" in response.json()["error"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("!!!not-base64!!!", "invalid_base64"),
        (b64(b"just some text, not an image"), "unsupported_image"),
        (b64(images.decompression_bomb()), "image_too_large"),
        (b64(TRUNCATED_JPEG), "corrupt_image"),
    ],
)
def test_single_bad_item_gets_4xx_naming_the_problem(
    client: httpx.Client, payload: str, code: str
) -> None:
    response = client.post(NSFW, json={"instances": [{"filename": "x", "image": payload}]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["predictions"][0]["error"]["code"] == code
    assert body["error"] == body["predictions"][0]["error"]["message"]


def test_oversized_body_is_413(client: httpx.Client) -> None:
    response = client.post(LOGO, content=b"x" * (49 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_oversized_chunked_body_is_413_with_the_same_shape(client: httpx.Client) -> None:
    def chunks():
        for _ in range(49):
            yield b"x" * (1024 * 1024)

    response = client.post(LOGO, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_unknown_model_is_404(client: httpx.Client, jpeg: bytes) -> None:
    response = client.post("/v1/models/nope:predict", json={"instances": [{"image": b64(jpeg)}]})
    assert response.status_code == 404
