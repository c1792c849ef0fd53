"""The real stack for the tests: tritonserver, the transformer over HTTP, a fake Commons.

Triton and the transformer run as subprocesses on free ports, once per test session, on
the model repository that ``make models`` generated.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from predictor.specs import SPECS
from predictor.stack import TRANSFORMER_MODELS, transformer_command
from predictor.triton_server import TritonPorts, TritonProcess
from tests import images, videos
from tests.fake_commons import FakeCommons

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    missing = [s.name for s in SPECS if not (MODEL_REPOSITORY / s.name / "config.pbtxt").exists()]
    if missing:
        pytest.fail(f"model repository lacks {missing}: run `make models` (make test does)")
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    with open(log, "wb") as output:
        process = TritonProcess(MODEL_REPOSITORY, ROOT / "build", ports, output=output)
        with process:
            try:
                process.wait_ready(timeout_s=180)
            except (RuntimeError, TimeoutError) as exc:
                pytest.fail(f"{exc}; log:\n{log.read_text()[-3000:]}")
            yield process


@pytest.fixture(scope="session")
def triton(triton_server: TritonProcess) -> TritonPorts:
    return triton_server.ports


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
def transformer_process(
    triton: TritonPorts, fake_commons: FakeCommons, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """The transformer's URL, process and log."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        COMMONS_API_URL=fake_commons.api_url,
        COMMONS_UPLOAD_HOSTS=f'["{httpx.URL(fake_commons.api_url).netloc.decode()}"]',
        COMMONS_USER_AGENT="commons-moderation-tests/0.1 (https://example.org/tests)",
        MAX_BODY_BYTES=str(48 * 1024 * 1024),
    )
    log = tmp_path_factory.mktemp("transformer") / "transformer.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            transformer_command(port, triton), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_transformer(url, process, log)
            yield url, process, log
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def transformer_url(transformer_process: tuple[str, subprocess.Popen, Path]) -> str:
    return transformer_process[0]


def wait_transformer(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transformer exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if all(
                httpx.get(f"{url}/v1/models/{name}", timeout=2).status_code == 200
                for name in TRANSFORMER_MODELS
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"transformer not ready after 120 s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def client(transformer_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=transformer_url, timeout=120) as http:
        yield http
