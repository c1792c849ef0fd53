"""The request id travels to Commons and into one JSON log line per predict request, over
the session's stack."""

from __future__ import annotations

import json
import time

import httpx

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
