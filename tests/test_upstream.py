"""Commons and Triton failures become 502/503/504 and never mask the client's good items."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest

from devtools import images
from predictor.triton_server import TritonPorts
from stack import Stack, free_port
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment

LOGO = "/v1/models/logo-detection:predict"
ATTEMPTS = 3  # COMMONS_RETRIES=2 → three tries per call


def inline() -> dict:
    data = images.encode(images.photo(200, 150, 11), "JPEG")
    return {"filename": "inline.jpg", "image": base64.b64encode(data).decode()}


def test_commons_outage_fails_only_the_lookups(client: httpx.Client, fake_commons) -> None:
    fake_commons.fail_api(times=ATTEMPTS, status=503)
    response = client.post(LOGO, json={"instances": [inline(), {"filename": "Kanion Co.png"}]})
    assert response.status_code == 200, response.text
    scored, failed = response.json()["predictions"]
    assert "prediction" in scored
    assert failed["error"]["code"] == "commons_unavailable"
    assert "Commons" in failed["error"]["message"]


@pytest.mark.parametrize(("status", "expected"), [(503, 503), (500, 502), (429, 503)])
def test_commons_outage_for_every_item_is_5xx(
    client: httpx.Client, fake_commons, status: int, expected: int
) -> None:
    fake_commons.fail_api(times=ATTEMPTS, status=status)
    response = client.post(LOGO, json={"instances": [{"filename": "Kanion Co.png"}]})
    assert response.status_code == expected, response.text
    assert "Commons" in response.json()["error"]
    assert ("retry-after" in response.headers) == (expected == 503)


def test_commons_timeout_is_504(client: httpx.Client, fake_commons) -> None:
    fake_commons.api_delay = 6.0  # over COMMONS_API_TIMEOUT_S=5
    try:
        response = client.post(LOGO, json={"instances": [{"filename": "Tiny icon.png"}]})
    finally:
        fake_commons.api_delay = 0.0
    assert response.status_code == 504, response.text


def test_a_web_page_instead_of_a_file_is_502(client: httpx.Client, fake_commons) -> None:
    """The fake's upload host serves this one as an HTML page: Commons' fault, not corrupt."""
    alone = client.post(LOGO, json={"instances": [{"filename": "Not really an image.jpg"}]})
    assert alone.status_code == 502, alone.text
    assert "text/html" in alone.json()["error"]
    mixed = client.post(
        LOGO, json={"instances": [inline(), {"filename": "Not really an image.jpg"}]}
    )
    assert mixed.status_code == 200, mixed.text
    scored, failed = mixed.json()["predictions"]
    assert "prediction" in scored
    assert failed["error"]["code"] == "fetch_failed"


def test_lagged_replicas_are_waited_out(client: httpx.Client, fake_commons) -> None:
    fake_commons.lag_replicas(1, lag=7)
    before = len(fake_commons.api_requests)
    response = client.post(LOGO, json={"instances": [{"filename": "Portrait photo.jpg"}]})
    assert response.status_code == 200, response.text
    lagged, served = fake_commons.api_requests[before : before + 2]
    assert lagged.params["maxlag"] == served.params["maxlag"] == "5"
    # MediaWiki asks for 5 s; COMMONS_MAX_RETRY_AFTER_S (2 s) cuts the pause.
    assert 2 <= served.at - lagged.at < 4


def transformer(
    triton: TritonPorts, fake_commons, logs: Path, health_check: bool = True, **env: str
) -> Stack:
    """A transformer of its own in front of ``triton``, with settings the session's lacks."""
    return Stack(
        triton_ports=triton,
        start_triton=False,
        env={**commons_environment(fake_commons.api_url), **WITHOUT_SCORE_STORE, **env},
        health_check=health_check,
        logs=logs,
    )


def test_triton_down_is_503(fake_commons, tmp_path) -> None:
    dead = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    with transformer(dead, fake_commons, tmp_path, health_check=False) as served:
        response = httpx.post(served.url + LOGO, json={"instances": [inline()]}, timeout=60)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "Triton" in response.json()["error"]


@pytest.mark.parametrize("slow", ["api_delay", "file_delay"])
def test_the_request_deadline_cuts_slow_lookups_and_downloads(
    triton: TritonPorts, fake_commons, tmp_path, slow: str
) -> None:
    """One deadline covers lookups, downloads and retries: the slow item gets
    deadline_exceeded when it passes, and the inline item is still scored."""
    settings = {"REQUEST_DEADLINE_S": "3", "COMMONS_API_TIMEOUT_S": "20", "COMMONS_FETCH_TIMEOUT_S": "20"}
    with transformer(triton, fake_commons, tmp_path, **settings) as served:
        setattr(fake_commons, slow, 8.0)
        try:
            started = time.monotonic()
            response = httpx.post(
                served.url + LOGO,
                json={"instances": [inline(), {"filename": "Portrait photo.jpg"}]},
                timeout=60,
            )
            took = time.monotonic() - started
        finally:
            setattr(fake_commons, slow, 0.0)
    assert response.status_code == 200, response.text
    scored, late = response.json()["predictions"]
    assert "prediction" in scored
    assert late["error"]["code"] == "deadline_exceeded"
    assert 3 <= took < 5


def test_image_downloads_wait_for_the_download_budget(
    triton: TritonPorts, fake_commons, tmp_path
) -> None:
    """With room for one thumbnail's bound at a time (each is its pixels as RGBA, about
    0.7 MB here), two files are fetched one after the other, and both are scored."""
    names = ["Portrait photo.jpg", "Kanion Co.png"]
    settings = {"MAX_INFLIGHT_DOWNLOAD_BYTES": str(1024 * 1024)}
    with transformer(triton, fake_commons, tmp_path, **settings) as served:
        before = len(fake_commons.file_requests)
        fake_commons.file_delay = 0.5
        try:
            response = httpx.post(
                served.url + LOGO, json={"instances": [{"filename": n} for n in names]}, timeout=60
            )
        finally:
            fake_commons.file_delay = 0.0
    assert response.status_code == 200, response.text
    assert all("prediction" in p for p in response.json()["predictions"])
    first, second = fake_commons.file_requests[before:]
    assert second.at - first.at >= 0.5
