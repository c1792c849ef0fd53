"""Every item error code the README documents is asserted over HTTP somewhere.

The table here covers the codes no other test reaches through the transformer (and new
routes to two that others do: a download answering 404 or 5xx), on a MediaWiki stand-in
and a transformer of this module's own with tight limits, in front of the session's
Triton. `test_readme_error_codes_are_all_asserted_over_http` checks the README's lists
against this table and the tests that cover the rest.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools import images, videos
from devtools.fake_commons import FakeCommons
from predictor.triton_server import TritonPorts
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment
from transformer.errors import STATUS_BY_CODE

ROOT = Path(__file__).resolve().parent.parent
LOGO = "/v1/models/logo-detection:predict"
VIDEO = "/v1/models/nsfw-video-detection:predict"
MAX_IMAGE_BYTES = 60_000
FOREIGN_HOST = "http://uploads.example.invalid"

FILES = {
    "Empty.png": b"",  # listed as a PNG, served as 0 bytes
    "Anthem.webm": videos.with_audio([], 1.0),  # AUDIO
    "Large photo.png": images.encode(images.photo(300, 300, 1), "PNG"),  # > MAX_IMAGE_BYTES
    "Small photo.jpg": images.encode(images.photo(200, 150, 2), "JPEG", quality=90),
    "Big clip.webm": videos.encode([(images.photo(320, 240, 4), 1.0)], codec=videos.VP8),
}
MAX_VIDEO_PIXELS = 320 * 240 - 1


def inline_video(seconds: float) -> dict:
    clip = videos.encode([(images.photo(64, 48, 3), seconds)], codec=videos.VP8)
    return {"video": base64.b64encode(clip).decode()}


@dataclass(frozen=True)
class Case:
    path: str
    instance: dict
    status: int
    code: str
    words: str  # in the item's message
    knob: Callable[[FakeCommons], None] = lambda fake: None


CASES: dict[str, Case] = {
    "zero-byte file by name": Case(
        LOGO, {"filename": "Empty.png"}, 400, "empty_image", "empty (0 bytes)"
    ),
    "audio file by name": Case(
        LOGO, {"filename": "Anthem.webm"}, 400, "not_an_image", "AUDIO (audio/webm), not an image"
    ),
    "file over MAX_IMAGE_BYTES by name": Case(
        LOGO, {"filename": "Large photo.png"}, 400, "file_too_large",
        f"larger than {MAX_IMAGE_BYTES} bytes",
    ),
    "download answering 404": Case(
        LOGO, {"filename": "Small photo.jpg"}, 502, "fetch_failed", "answered HTTP 404",
        lambda fake: fake.fail_files(times=1, status=404),
    ),
    "download answering 500 on every try": Case(
        LOGO, {"filename": "Small photo.jpg"}, 502, "commons_unavailable", "answered HTTP 500",
        lambda fake: fake.fail_files(times=3, status=500),  # COMMONS_RETRIES=2: three tries
    ),
    "file URL on a foreign host": Case(
        LOGO, {"filename": "Small photo.jpg"}, 502, "url_not_allowed", "not a Commons upload host",
        lambda fake: setattr(fake, "upload_base", FOREIGN_HOST),
    ),
    "video listed larger than MAX_VIDEO_PIXELS, refused before download": Case(
        VIDEO, {"filename": "Big clip.webm"}, 400, "video_too_large",
        f"frames of 320x240 = 76800 pixels exceed the limit of {MAX_VIDEO_PIXELS}",
    ),
    "video over MAX_VIDEO_DURATION_S": Case(
        VIDEO, inline_video(3.0), 400, "video_too_long", "over the limit of 2 s"
    ),
}

# Codes asserted over HTTP by other tests, and where.
ELSEWHERE: dict[str, str] = {
    "invalid_instance": "test_api.py",
    "invalid_base64": "test_api.py",
    "image_too_large": "test_api.py",
    "unsupported_image": "test_api.py",
    "corrupt_image": "test_api.py",
    "invalid_title": "test_api.py",
    "file_not_found": "test_api.py",
    "deadline_exceeded": "test_upstream.py",
    "unsupported_video": "test_video.py",
    "corrupt_video": "test_video.py",
    "truncated_video": "test_video.py",
    "no_frames": "test_video.py",
    "not_a_video": "test_video.py",
    "video_too_large": "test_video.py",
    "empty_video": "test_video.py",
}


@pytest.fixture(scope="module")
def commons() -> Iterator[FakeCommons]:
    with FakeCommons(FILES) as fake:
        yield fake


@contextmanager
def own_transformer(
    triton: TritonPorts, commons: FakeCommons, logs: Path, **settings: str
) -> Iterator[str]:
    with Stack(
        triton_ports=triton,
        start_triton=False,
        env={**commons_environment(commons.api_url), **WITHOUT_SCORE_STORE, **settings},
        logs=logs,
    ) as served:
        yield served.url


@pytest.fixture(scope="module")
def limited(
    triton: TritonPorts, commons: FakeCommons, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A transformer with small byte and duration limits, on this module's stand-in."""
    settings = {
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "MAX_VIDEO_DURATION_S": "2",
        "MAX_VIDEO_PIXELS": str(MAX_VIDEO_PIXELS),
    }
    with own_transformer(triton, commons, tmp_path_factory.mktemp("limited"), **settings) as url:
        yield url


@pytest.mark.parametrize("case", list(CASES))
def test_item_error_code_over_http(limited: str, commons: FakeCommons, case: str) -> None:
    spec = CASES[case]
    commons.reset()
    spec.knob(commons)
    before = len(commons.file_requests)
    try:
        response = httpx.post(limited + spec.path, json={"instances": [spec.instance]}, timeout=60)
    finally:
        commons.reset()
    assert response.status_code == spec.status, response.text
    body = response.json()
    (prediction,) = body["predictions"]
    assert prediction["error"]["code"] == spec.code
    assert spec.words in prediction["error"]["message"]
    if spec.code in ("url_not_allowed", "video_too_large"):
        assert len(commons.file_requests) == before, "a refused file must not be fetched"


def test_video_over_the_decoding_budget_over_http(
    triton: TritonPorts, commons: FakeCommons, tmp_path: Path
) -> None:
    """A budget no decode can meet: the scan stops at its first check."""
    with own_transformer(triton, commons, tmp_path, VIDEO_BUDGET_S="0.000001") as url:
        response = httpx.post(url + VIDEO, json={"instances": [inline_video(1.0)]}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["predictions"][0]["error"]
    assert error["code"] == "video_budget_exceeded"
    assert "over the per-video budget" in error["message"]


def test_triton_timeout_is_504(triton: TritonPorts, commons: FakeCommons, tmp_path: Path) -> None:
    """A Triton call that outlives TRITON_TIMEOUT_S fails the request with 504."""
    image = base64.b64encode(FILES["Small photo.jpg"]).decode()
    with own_transformer(triton, commons, tmp_path, TRITON_TIMEOUT_S="0.001") as url:
        response = httpx.post(url + LOGO, json={"instances": [{"image": image}]}, timeout=60)
    assert response.status_code == 504, response.text
    assert "DEADLINE_EXCEEDED" in response.json()["error"]


def documented_codes() -> set[str]:
    """The item error codes README.md lists: the images' list and the videos' one."""
    readme = (ROOT / "README.md").read_text()
    lists = [
        re.search(r"^Item error codes:(.*?)\n\n", readme, re.DOTALL | re.MULTILINE),
        re.search(r"^\*\*Errors\*\*(.*?)\n\n", readme, re.DOTALL | re.MULTILINE),
    ]
    assert all(lists), "README.md's error code lists moved: update this parser"
    return {code for found in lists for code in re.findall(r"`([a-z0-9_]+)`", found.group(1))}


def test_readme_error_codes_are_all_asserted_over_http() -> None:
    documented = documented_codes()
    assert len(documented) >= 20
    here = {case.code for case in CASES.values()} | {"video_budget_exceeded"}  # its own test
    assert documented - here - ELSEWHERE.keys() == set(), "documented, never asserted"
    assert (here | ELSEWHERE.keys()) - documented == set(), "asserted, never documented"
    for code, name in ELSEWHERE.items():
        source = (ROOT / "tests" / name).read_text()
        assert f'"{code}"' in source, f"{name} no longer asserts {code}"


def test_the_status_table_holds_exactly_the_documented_codes() -> None:
    """One table maps codes to statuses: client codes 4xx, upstream codes 5xx."""
    assert set(STATUS_BY_CODE) == documented_codes()
    upstream = {"fetch_failed", "url_not_allowed", "commons_unavailable", "deadline_exceeded"}
    for code, status in STATUS_BY_CODE.items():
        assert (status >= 500) == (code in upstream), code
