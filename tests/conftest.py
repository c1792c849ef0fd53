"""The real stack for the tests: tritonserver, the transformer over HTTP, the MediaWiki
stand-in.

Triton and the transformer run as subprocesses on free ports (`stack.Stack`), once per
test session, on the model repository that ``make models`` generated.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools import images, videos
from devtools.fake_commons import FakeCommons
from predictor.triton_server import TritonPorts
from preprocessing.specs import SPECS
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, StackError, commons_environment
from tests import postgres
from tests.postgres import fresh_database

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"


@pytest.fixture(scope="session")
def stack(fake_commons: FakeCommons, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Triton and the transformer, on free ports, for the whole session."""
    missing = [s.name for s in SPECS if not (MODEL_REPOSITORY / s.name / "config.pbtxt").exists()]
    if missing:
        pytest.fail(f"model repository lacks {missing}: run `make models` (make test does)")
    env = {
        **commons_environment(fake_commons.api_url),
        **WITHOUT_SCORE_STORE,
        "COMMONS_USER_AGENT": "commons-moderation-tests/0.1 (https://example.org/tests)",
        "MAX_BODY_BYTES": str(48 * 1024 * 1024),
    }
    served = Stack(env=env, logs=tmp_path_factory.mktemp("stack"))
    try:
        served.start()
    except StackError as exc:
        served.stop()
        pytest.fail(str(exc))
    yield served
    served.stop()


@pytest.fixture(scope="session")
def triton(stack: Stack) -> TritonPorts:
    return stack.triton_ports


@pytest.fixture(scope="session")
def commons_files() -> dict[str, bytes]:
    """What the fake Commons hosts, by title without the File: prefix."""
    files = {
        "Kanion Co.png": images.encode(images.photo(640, 400, 7), "PNG"),
        "Portrait photo.jpg": images.encode(images.photo(600, 900, 8), "JPEG", quality=90),
        "Wide panorama.jpg": images.encode(images.photo(3000, 400, 9), "JPEG", quality=90),
        "Tiny icon.png": images.encode(images.photo(100, 80, 10), "PNG"),
        "Not really an image.jpg": b"<html>this is not an image</html>",
        # Videos (mediatype VIDEO) and an animated GIF (BITMAP) for nsfw-video-detection.
        "Skin clip.webm": videos.encode(videos.PHOTO_THEN_SKIN, codec=videos.VP8),
        "Skin clip.mp4": videos.encode(videos.PHOTO_THEN_SKIN),
        "Skin loop.gif": videos.animated(
            [(image, round(seconds * 1000)) for image, seconds in videos.PHOTO_THEN_SKIN], "GIF"
        ),
    }
    return files


@pytest.fixture(scope="session")
def fake_commons(commons_files: dict[str, bytes]) -> Iterator[FakeCommons]:
    with FakeCommons(
        commons_files, redirects={"File:Old name.png": "File:Kanion Co.png"}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def transformer_url(stack: Stack) -> str:
    return stack.url


@pytest.fixture
def client(transformer_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=transformer_url, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of the session's own, listening on a Unix socket only."""
    try:
        server = postgres.Server()
    except postgres.PostgresError as exc:
        pytest.fail(str(exc))
    try:
        url = server.start()
    except (postgres.PostgresError, subprocess.TimeoutExpired) as exc:
        server.stop()
        pytest.fail(str(exc))
    yield url
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test, on each backend."""
    with fresh_database(request, tmp_path) as url:
        yield url
