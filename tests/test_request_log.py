"""The request id travels to Commons and into one JSON log line per predict request, and
``"debug": true`` puts the line's timings in the answer, over the session's stack."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from devtools import images
from devtools.fake_commons import FakeCommons
from stack import Stack

TITLE = "Request log test.jpg"


def logged(stack: Stack, request_id: str, timeout_s: float = 5.0) -> dict:
    path = stack.log_path("transformer")
    assert path is not None
    deadline = time.monotonic() + timeout_s
    while True:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"request_id": "{request_id}"' in line:
                return json.loads(line)
        assert time.monotonic() < deadline, f"no log line for {request_id}"
        time.sleep(0.1)


def test_the_request_id_reaches_commons_and_one_json_line(
    client: httpx.Client, stack: Stack, fake_commons: FakeCommons
) -> None:
    fake_commons.add_file(TITLE, images.encode(images.photo(400, 300, 41), "JPEG"))
    request_id = "trace-me-4711"
    answer = client.post(
        "/v1/models/logo-detection:predict",
        json={"instances": [{"filename": TITLE}, {"image": "bm90IGFuIGltYWdl"}]},
        headers={"x-request-id": request_id},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == request_id

    sent = [r for r in fake_commons.requests if r.headers.get("x-request-id") == request_id]
    assert {r.path == "/w/api.php" for r in sent} == {True, False}, "API call and download"

    line = logged(stack, request_id)
    assert (line["method"], line["path"], line["status"]) == (
        "POST", "/v1/models/logo-detection:predict", 200,
    )  # fmt: skip
    assert (line["model"], line["items"]) == ("logo-detection", 2)
    assert line["item_errors"] == {"unsupported_image": 1}
    assert {"commons_api", "commons_download", "decode", "triton"} <= set(line["stages_ms"])
    assert line["duration_ms"] >= line["stages_ms"]["triton"]
    assert "Request log test" not in json.dumps(line), "titles are not logged"


def test_a_request_without_an_id_gets_one_in_its_answer_and_line(
    client: httpx.Client, stack: Stack
) -> None:
    answer = client.post("/v1/models/nsfw-detection:predict", json={"instances": []})
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32
    line = logged(stack, request_id)
    assert line["status"] == answer.status_code == 400


LOGO = "/v1/models/logo-detection:predict"
NSFW = "/v1/models/nsfw-detection:predict"
VIDEO = "/v1/models/nsfw-video-detection:predict"


def debugged(client: httpx.Client, path: str, instances: list[dict], request_id: str) -> dict:
    """The ``debug`` object of a 200 answer, checked against the answer and the log line."""
    answer = client.post(
        path, json={"debug": True, "instances": instances}, headers={"x-request-id": request_id}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"predictions", "debug"}
    debug = body["debug"]
    assert set(debug) == {"request_id", "stages_ms", "total_ms"}
    assert debug["request_id"] == request_id == answer.headers["x-request-id"]
    assert debug["total_ms"] > 0
    assert all(ms >= 0 for ms in debug["stages_ms"].values()), debug
    return debug


def assert_within(debug: dict, stages: set[str]) -> None:
    """Stages that ran once, or one after another, took no longer than the request."""
    assert all(debug["stages_ms"][s] <= debug["total_ms"] for s in stages), debug


def test_debug_adds_the_stage_timings_of_a_lookup(
    client: httpx.Client, stack: Stack, fake_commons: FakeCommons
) -> None:
    fake_commons.add_file("Debug test.jpg", images.encode(images.photo(400, 300, 42), "JPEG"))
    debug = debugged(client, LOGO, [{"filename": "Debug test.jpg"}], "debug-by-name")
    assert set(debug["stages_ms"]) == {"commons_api", "commons_download", "decode", "triton"}
    assert_within(debug, set(debug["stages_ms"]))
    # Nothing runs after the answer is made: the log line has the same stages.
    line = logged(stack, "debug-by-name")
    assert line["stages_ms"] == debug["stages_ms"]
    assert line["duration_ms"] >= debug["total_ms"]


def test_debug_of_inline_images_has_no_commons_stages(client: httpx.Client) -> None:
    image = base64.b64encode(images.encode(images.photo(300, 200, 43), "PNG")).decode()
    debug = debugged(client, NSFW, [{"image": image}], "debug-inline")
    assert set(debug["stages_ms"]) == {"decode", "triton"}
    assert_within(debug, {"decode", "triton"})


def test_debug_of_a_video_has_its_scan(client: httpx.Client) -> None:
    debug = debugged(client, VIDEO, [{"filename": "Skin clip.webm"}], "debug-video")
    assert set(debug["stages_ms"]) == {"commons_api", "commons_download", "video_scan", "triton"}
    # Triton calls overlap the scan and each other, so their sum may exceed the total.
    assert_within(debug, {"commons_api", "commons_download", "video_scan"})


@pytest.mark.parametrize("path", [LOGO, VIDEO])
@pytest.mark.parametrize("debug", [False, None])
def test_without_debug_the_answer_is_predictions_only(
    client: httpx.Client, path: str, debug: bool | None
) -> None:
    instance = {"filename": "Skin clip.webm" if path == VIDEO else "Kanion Co.png"}
    body = {"instances": [instance]} | ({} if debug is None else {"debug": debug})
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["predictions"]


@pytest.mark.parametrize("path", [LOGO, NSFW, VIDEO])
@pytest.mark.parametrize(
    ("value", "named"),
    [("yes", "a string"), (1, "a number"), (None, "null"), ([True], "an array"), ({}, "an object")],
)
def test_debug_that_is_not_a_boolean_is_400(
    client: httpx.Client, path: str, value: object, named: str
) -> None:
    answer = client.post(path, json={"debug": value, "instances": [{"filename": "Kanion Co.png"}]})
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": f'"debug" must be true or false, not {named}'}
