"""`transformer.commons` against `FakeCommons`, a real HTTP server speaking MediaWiki's format."""

from __future__ import annotations

import asyncio
import io
import random
import re
import socket
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from PIL import Image

from devtools.fake_commons import FakeCommons, image_bytes
from devtools.local_server import LocalServer, LoggedRequest
from transformer import commons
from transformer.commons import (
    MAX_CONTINUATIONS,
    CommonsClient,
    CommonsFile,
    CommonsUnavailable,
    DeadlineExceeded,
    ItemError,
)
from transformer.config import Settings
from transformer.errors import status_of
from transformer.request import Instance
from transformer.sources import IMAGES, commons_client, download, resolve_all

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

UA = "commons-moderation-tests/1.0 (https://example.org/contact)"
FILES = {
    "Portrait.jpg": image_bytes(600, 900),
    "Landscape photo.jpg": image_bytes(800, 600),
    "Panorama.jpg": image_bytes(2000, 400),
    "Panorama 2.jpg": image_bytes(1500, 300),
    "Small panorama.jpg": image_bytes(500, 100),
    "Very wide.jpg": image_bytes(4000, 300),
    "Small.png": image_bytes(100, 80, "PNG"),
    "Not an image.bin": b"not an image",
    "Crème brûlée.jpg": image_bytes(400, 300),
    # Listed as a JPEG; the upload host serves a web page instead.
    "Not really an image.jpg": b"<html>this is not an image</html>",
}
REDIRECTS = {"Old name.jpg": "Portrait.jpg"}


@pytest.fixture
def fake() -> Iterator[FakeCommons]:
    with FakeCommons(FILES, REDIRECTS) as server:
        yield server


def client_for(fake: FakeCommons, **options: Any) -> CommonsClient:
    options = {"upload_hosts": (), "backoff": 0.01, **options}
    return CommonsClient(fake.api_url, user_agent=UA, **options)


def sent_titles(fake: FakeCommons) -> list[list[str]]:
    return [r.params["titles"].split("|") for r in fake.api_requests]


def ok(result: CommonsFile | ItemError) -> CommonsFile:
    assert isinstance(result, CommonsFile), result
    return result


def error_code(result: CommonsFile | ItemError | bytes) -> str:
    assert isinstance(result, ItemError), result
    return result.code


def gaps(requests: list[LoggedRequest]) -> list[float]:
    """Seconds between consecutive requests' arrivals."""
    return [b.at - a.at for a, b in zip(requests, requests[1:])]


def in_seconds(seconds: float) -> float:
    """A deadline ``seconds`` from now."""
    return asyncio.get_running_loop().time() + seconds


# --- resolving names -------------------------------------------------------------------


async def test_any_spelling_of_a_name_resolves_in_one_call(fake: FakeCommons) -> None:
    names = [
        "Portrait.jpg",
        "File:Portrait.jpg",
        "file:portrait.jpg",
        "Image:Portrait.jpg",
        "Landscape_photo.jpg",
        " File:Landscape photo.jpg ",
    ]
    async with client_for(fake) as client:
        results = await client.resolve(names)
    titles = [ok(r).title for r in results]
    assert titles == ["File:Portrait.jpg"] * 4 + ["File:Landscape photo.jpg"] * 2
    assert len(fake.api_requests) == 1
    # Spellings are sent as given (deduplicated) and mapped back through `normalized`.
    assert sent_titles(fake) == [
        [
            "File:Portrait.jpg",
            "file:portrait.jpg",
            "Image:Portrait.jpg",
            "File:Landscape_photo.jpg",
            "File:Landscape photo.jpg",
        ]
    ]


async def test_decomposed_unicode_is_sent_composed(fake: FakeCommons) -> None:
    """MediaWiki titles are NFC; a decomposed name (as macOS types it) is composed first."""
    async with client_for(fake) as client:
        (result,) = await client.resolve(["File:Portrai\u0308t.jpg"])
    assert sent_titles(fake) == [["File:Portra\u00eft.jpg"]]
    assert error_code(result) == "file_not_found"


async def test_overlong_names_are_rejected_before_normalising_and_never_sent(
    fake: FakeCommons,
) -> None:
    """A name longer than any title can normalise to is refused at once, quoted in part; one
    of 255 bytes fully decomposed (4 code points for each character) is still looked up."""
    decomposed = unicodedata.normalize("NFD", "\u1f82" * 85)  # 255 bytes in NFC, 340 code points
    names = ["e\u0301" * 1_000_000, "File:" + "_" * 1_000_000 + "Portrait.jpg", decomposed]
    async with client_for(fake) as client:
        results = await client.resolve(names)
    assert [error_code(r) for r in results] == ["invalid_title", "invalid_title", "file_not_found"]
    assert "255 bytes" in results[0].message and len(results[0].message) < 200
    assert sent_titles(fake) == [["File:" + "\u1f82" * 85]]


async def test_redirects_missing_files_and_request_order(fake: FakeCommons) -> None:
    names = ["Missing.jpg", "Old_name.jpg", "Small.png", "File:Also missing.png", "Portrait.jpg"]
    async with client_for(fake) as client:
        results = await client.resolve(names)
    assert error_code(results[0]) == "file_not_found"
    assert "File:Missing.jpg" in results[0].message
    assert ok(results[1]).title == "File:Portrait.jpg"
    assert ok(results[2]).title == "File:Small.png"
    assert error_code(results[3]) == "file_not_found"
    assert ok(results[4]) == results[1]
    assert len(fake.api_requests) == 1


async def test_invalid_names_are_rejected_without_a_request(fake: FakeCommons) -> None:
    names = ["", "File:", "  _ ", "A|B.jpg", "A<b>.jpg", "x[1].png", "Tab\t.jpg", "a{b}.jpg"]
    names.append("é" * 128 + ".jpg")  # 260 bytes in UTF-8
    async with client_for(fake) as client:
        results = await client.resolve(names)
    assert [error_code(r) for r in results] == ["invalid_title"] * len(names)
    assert "'|'" in results[3].message
    assert "255 bytes" in results[-1].message
    assert fake.api_requests == []


async def test_invalid_names_do_not_spoil_valid_ones(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        results = await client.resolve(["A|B.jpg", "Portrait.jpg"])
    assert error_code(results[0]) == "invalid_title"
    assert ok(results[1]).title == "File:Portrait.jpg"
    assert sent_titles(fake) == [["File:Portrait.jpg"]]


async def test_titles_the_server_finds_invalid_are_per_item_errors(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        results = await client.resolve(["A%41.jpg", "../up.jpg", "~~~~.png", "Portrait.jpg"])
    assert [error_code(r) for r in results[:3]] == ["invalid_title"] * 3
    assert "invalid characters" in results[0].message
    assert "relative path" in results[1].message
    assert ok(results[3]).title == "File:Portrait.jpg"


async def test_up_to_50_names_take_one_call_and_more_are_chunked(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        fifty = await client.resolve([f"F{i}.jpg" for i in range(49)] + ["Portrait.jpg"])
        assert len(fake.api_requests) == 1
        many = await client.resolve([f"G{i}.jpg" for i in range(119)] + ["Portrait.jpg"])
    assert [len(titles) for titles in sent_titles(fake)] == [50, 50, 50, 20]
    assert ok(fifty[-1]).title == ok(many[-1]).title == "File:Portrait.jpg"
    assert {error_code(r) for r in many[:-1]} == {"file_not_found"}


async def test_fake_refuses_more_than_50_titles_like_mediawiki(fake: FakeCommons) -> None:
    params = {"action": "query", "prop": "imageinfo", "format": "json", "formatversion": "2"}
    params["titles"] = "|".join(f"File:{i}.jpg" for i in range(51))
    async with httpx.AsyncClient() as http:
        response = await http.post(fake.api_url, data=params)
    assert response.status_code == 200
    assert response.headers["MediaWiki-API-Error"] == "toomanyvalues"
    assert response.json()["error"]["code"] == "toomanyvalues"


# --- thumbnail width -----------------------------------------------------------------------


async def test_thumbnails_have_a_short_side_of_at_least_224(fake: FakeCommons) -> None:
    names = [
        "Portrait.jpg",
        "Landscape photo.jpg",
        "Panorama.jpg",
        "Panorama 2.jpg",
        "Small panorama.jpg",
        "Very wide.jpg",
        "Small.png",
        "Not an image.bin",
    ]
    async with client_for(fake) as client:
        results = [ok(r) for r in await client.resolve(names)]
    portrait, landscape, pano, pano2, small_pano, very_wide, small, not_image = results

    # A cached width (330) serves ordinary pictures in one call.
    assert portrait.url == fake.thumb_url("Portrait.jpg", 330)
    assert (portrait.thumb_width, portrait.thumb_height) == (330, 495)
    assert landscape.url == fake.thumb_url("Landscape photo.jpg", 330)
    assert (landscape.thumb_width, landscape.thumb_height) == (330, 248)
    # Panoramas get the smallest cached width that makes them 224 px high ...
    assert pano.url == fake.thumb_url("Panorama.jpg", 1280)
    assert (pano.thumb_width, pano.thumb_height) == (1280, 256)
    assert (pano2.thumb_width, pano2.thumb_height) == (1280, 256)
    # ... never wider than the original (then it is the original) ...
    assert small_pano.url == fake.original_url("Small panorama.jpg")
    assert (small_pano.thumb_width, small_pano.thumb_height) == (500, 100)
    # ... or the exact width when no cached one is wide enough.
    assert (very_wide.thumb_width, very_wide.thumb_height) == (2987, 224)
    # Originals smaller than the asked width come as they are.
    assert small.url == fake.original_url("Small.png")
    assert (small.thumb_width, small.thumb_height) == (100, 80)
    assert not_image.url == fake.original_url("Not an image.bin")
    assert (not_image.mediatype, not_image.width) == ("UNKNOWN", 0)

    # One call at 330 for all, then one per wider width, panoramas of a width together.
    calls = [(r.params["iiurlwidth"], r.params["titles"]) for r in fake.api_requests]
    assert calls[0][0] == "330"
    assert sorted(calls[1:]) == [
        ("1280", "File:Panorama.jpg|File:Panorama 2.jpg"),
        ("2987", "File:Very wide.jpg"),
        ("500", "File:Small panorama.jpg"),
    ]


async def test_file_metadata_comes_from_imageinfo(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Small.png"])
    file = ok(file)
    assert (file.mime, file.mediatype, file.width, file.height) == ("image/png", "BITMAP", 100, 80)
    assert file.size == len(FILES["Small.png"])
    assert len(file.sha1) == 40
    assert file.original_url == fake.original_url("Small.png")


async def test_fetch_downloads_the_chosen_thumbnail_or_the_original(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        pano, portrait = [ok(r) for r in await client.resolve(["Panorama.jpg", "Portrait.jpg"])]
        thumb = await client.fetch(pano)
        original = await client.fetch(portrait, original=True)
    assert isinstance(thumb, bytes)
    assert Image.open(io.BytesIO(thumb)).size == (1280, 256)
    assert original == FILES["Portrait.jpg"]


# --- politeness and upstream failures -------------------------------------------------------


async def test_user_agent_and_query_parameters_are_sent(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        await client.fetch(ok(file))
    assert fake.api_requests and fake.file_requests
    assert {r.headers["user-agent"] for r in fake.requests} == {UA}
    params = fake.api_requests[0].params
    assert params == params | {
        "action": "query",
        "prop": "imageinfo",
        "iiprop": "url|sha1|mime|size|mediatype",
        "iiurlwidth": "330",
        "redirects": "1",
        "format": "json",
        "formatversion": "2",
        "maxlag": "5",
    }


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_transient_failures_are_retried(fake: FakeCommons, status: int) -> None:
    fake.fail_api(2, status)
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert ok(file).title == "File:Portrait.jpg"
    assert len(fake.api_requests) == 3


async def test_retry_after_is_honoured_but_capped(fake: FakeCommons) -> None:
    fake.fail_api(1, 429, headers={"Retry-After": "60"})
    start = time.monotonic()
    async with client_for(fake, max_retry_after=0.2, backoff=5.0) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert 0.2 <= time.monotonic() - start < 2
    assert ok(file).title == "File:Portrait.jpg"


@pytest.mark.parametrize(
    ("status", "expected"), [(500, 502), (502, 502), (503, 503), (429, 503), (504, 504)]
)
async def test_exhausted_retries_raise_with_our_status(
    fake: FakeCommons, status: int, expected: int
) -> None:
    fake.fail_api(3, status)
    async with client_for(fake) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == expected
    assert str(status) in raised.value.message
    assert len(fake.api_requests) == 3


async def test_timeouts_raise_504(fake: FakeCommons) -> None:
    fake.api_delay = 1.0
    async with client_for(fake, api_timeout=0.1, retries=1) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == 504
    assert len(fake.api_requests) == 2


async def test_unreachable_commons_raises_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/w/api.php"
    async with CommonsClient(api_url, user_agent=UA, backoff=0.01) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == 502


async def test_api_errors_raise_502_without_retrying(fake: FakeCommons) -> None:
    fake.api_error("internal_api_error_DBQueryError", "A database query error has occurred.")
    async with client_for(fake) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == 502
    assert "internal_api_error_DBQueryError" in raised.value.message
    assert len(fake.api_requests) == 1


async def test_invalid_json_raises_502(fake: FakeCommons) -> None:
    fake.fail_api(1, 200, body=b"<html>maintenance</html>")
    async with client_for(fake) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == 502
    assert "JSON" in raised.value.message


# --- fetching ------------------------------------------------------------------------------


@pytest.mark.parametrize("send_length", [True, False])
async def test_fetch_stops_at_the_size_limit(fake: FakeCommons, send_length: bool) -> None:
    fake.send_content_length = send_length
    async with client_for(fake, max_fetch_bytes=1000) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        result = await client.fetch(ok(file))
    assert error_code(result) == "file_too_large"


async def test_urls_outside_the_allowed_hosts_are_never_fetched(fake: FakeCommons) -> None:
    with FakeCommons(FILES) as elsewhere:
        fake.upload_base = elsewhere.base_url
        async with client_for(fake) as client:
            (file,) = await client.resolve(["Portrait.jpg"])
            assert ok(file).url.startswith(elsewhere.base_url)
            result = await client.fetch(ok(file))
        assert error_code(result) == "url_not_allowed"
        assert elsewhere.requests == []
        # Once the host is configured as an upload host, it is fetched.
        upload_host = elsewhere.base_url.removeprefix("http://")
        async with client_for(fake, upload_hosts=(upload_host,)) as client:
            assert isinstance(await client.fetch(ok(file)), bytes)
        assert len(elsewhere.requests) == 1


async def test_redirects_are_not_followed(fake: FakeCommons) -> None:
    with FakeCommons(FILES) as elsewhere:
        fake.redirect_files_to = elsewhere.original_url("Portrait.jpg")
        async with client_for(fake) as client:
            (file,) = await client.resolve(["Portrait.jpg"])
            result = await client.fetch(ok(file))
        assert error_code(result) == "fetch_failed"
        assert "302" in result.message
        assert elsewhere.requests == []


async def test_a_missing_thumbnail_is_a_per_item_error(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        files = [ok(r) for r in await client.resolve(["Portrait.jpg", "Small.png"])]
        fake.fail_files(1, 404)
        results = [await client.fetch(file) for file in files]
    assert error_code(results[0]) == "fetch_failed"
    assert "404" in results[0].message
    assert isinstance(results[1], bytes)
    assert len(fake.file_requests) == 2  # a 404 is not retried


async def test_fetch_retries_then_raises_on_upload_outage(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        fake.fail_files(2, 503)
        assert isinstance(await client.fetch(ok(file)), bytes)
        fake.fail_files(3, 502)
        with pytest.raises(CommonsUnavailable) as raised:
            await client.fetch(ok(file))
    assert raised.value.status == 502
    assert len(fake.file_requests) == 6



# --- Retry-After, backoff and deadlines ------------------------------------------------------


@pytest.mark.parametrize(("status", "http_date"), [(503, False), (429, True)])
async def test_retry_after_is_honoured_in_both_forms(
    fake: FakeCommons, status: int, http_date: bool
) -> None:
    fake.fail_api(1, status, retry_after=1, http_date=http_date)
    async with client_for(fake, max_retry_after=5) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert ok(file).title == "File:Portrait.jpg"
    (pause,) = gaps(fake.api_requests)
    # An HTTP-date counts whole seconds, so the fake rounds its date up by up to 1 s.
    assert 0.95 <= pause < (2.5 if http_date else 1.5)


async def test_retry_after_is_honoured_for_downloads(fake: FakeCommons) -> None:
    async with client_for(fake, max_retry_after=5) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        fake.fail_files(1, 503, retry_after=1, http_date=True)
        assert isinstance(await client.fetch(ok(file)), bytes)
    (pause,) = gaps(fake.file_requests)
    assert 0.95 <= pause < 2.5


async def test_backoff_is_exponential_with_full_jitter(
    fake: FakeCommons, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[float, float, float]] = []

    def uniform(low: float, high: float) -> float:
        value = real_uniform(low, high)
        drawn.append((low, high, value))
        return value

    real_uniform = random.uniform
    monkeypatch.setattr(commons.random, "uniform", uniform)
    fake.fail_api(3, 500)
    async with client_for(fake, backoff=0.2, retries=3) as client:
        await client.resolve(["Portrait.jpg"])
    assert [(low, high) for low, high, _ in drawn] == [(0, 0.2), (0, 0.4), (0, 0.8)]
    for (_, high, value), pause in zip(drawn, gaps(fake.api_requests), strict=True):
        assert 0 <= value <= high
        assert value <= pause < value + 0.2


async def test_a_deadline_cuts_a_retry_loop_short(fake: FakeCommons) -> None:
    fake.fail_api(10, 503)
    fake.api_delay = 0.4
    start = time.monotonic()
    async with client_for(fake, retries=5) as client:
        with pytest.raises(DeadlineExceeded) as raised:
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(1.0))
    assert 1.0 <= time.monotonic() - start < 1.5
    assert raised.value.status == 504
    assert "deadline" in raised.value.message
    assert len(fake.api_requests) == 3  # the third is cut off; retries would allow six


async def test_no_pause_is_taken_that_would_end_after_the_deadline(
    fake: FakeCommons, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commons.random, "uniform", lambda low, high: high)
    fake.fail_api(1, 500)
    start = time.monotonic()
    async with client_for(fake, backoff=10.0) as client:
        with pytest.raises(DeadlineExceeded) as raised:
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(2.0))
    assert time.monotonic() - start < 0.5
    assert "500" in raised.value.message
    assert len(fake.api_requests) == 1


@pytest.mark.parametrize("http_date", [False, True])
async def test_a_retry_after_beyond_the_deadline_fails_at_once(
    fake: FakeCommons, http_date: bool
) -> None:
    fake.fail_api(1, 429, retry_after=30, http_date=http_date)
    start = time.monotonic()
    async with client_for(fake) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(2.0))
    assert time.monotonic() - start < 0.5
    assert not isinstance(raised.value, DeadlineExceeded)
    assert raised.value.status == 503
    asked = re.search(r"asked to retry after ([0-9.]+) s", raised.value.message)
    assert asked, raised.value.message
    # A date is whole seconds, sent as ceil(now + 30), and read a moment after it was sent.
    assert 29 < float(asked.group(1)) < 31 if http_date else float(asked.group(1)) == 30
    assert len(fake.api_requests) == 1


async def test_a_slow_answer_is_cut_at_the_deadline(fake: FakeCommons) -> None:
    fake.api_delay = 2.0
    start = time.monotonic()
    async with client_for(fake) as client:
        with pytest.raises(DeadlineExceeded):
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(0.3))
    assert time.monotonic() - start < 0.8


async def test_the_deadline_covers_the_wider_lookups(fake: FakeCommons) -> None:
    fake.api_delay = 0.3
    async with client_for(fake) as client:
        with pytest.raises(DeadlineExceeded):
            await client.resolve(["Panorama.jpg"], deadline=in_seconds(0.45))
    assert [r.params["iiurlwidth"] for r in fake.api_requests] == ["330", "1280"]


async def test_a_passed_deadline_sends_nothing(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        with pytest.raises(DeadlineExceeded):
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(-1))
    assert fake.requests == []


async def test_the_deadline_bounds_downloads(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        fake.file_delay = 2.0
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.fetch(ok(file), deadline=in_seconds(0.3))
    assert time.monotonic() - start < 0.8


async def fetch_all(
    instances: list[Instance], client: CommonsClient, *, deadline: float | None = None
) -> list[bytes | ItemError]:
    """Every instance's bytes or error, as the image models fetch them."""
    sources = await resolve_all(instances, client, deadline=deadline)
    return [await download(client, s, IMAGES, deadline=deadline) for s in sources]


async def test_fetch_all_reports_the_deadline_per_looked_up_item(fake: FakeCommons) -> None:
    inline = Instance("inline.jpg", None, data=b"inline bytes")
    looked_up = Instance("Portrait.jpg", None)
    async with client_for(fake) as client:
        fake.file_delay = 2.0
        start = time.monotonic()
        results = await fetch_all([inline, looked_up], client, deadline=in_seconds(0.5))
    assert time.monotonic() - start < 1.0
    assert results[0] == b"inline bytes"
    error = results[1]
    assert isinstance(error, ItemError)
    assert (error.code, status_of(error)) == ("deadline_exceeded", 504)
    assert "deadline" in error.message


# --- maxlag ----------------------------------------------------------------------------------


async def test_maxlag_errors_are_retried_after_retry_after(fake: FakeCommons) -> None:
    fake.lag_replicas(2, lag=7)
    # MediaWiki asks for 5 s; the cap keeps the test short, and the backoff is far shorter.
    async with client_for(fake, max_retry_after=0.3) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert ok(file).title == "File:Portrait.jpg"
    assert len(fake.api_requests) == 3
    assert all(0.3 <= pause < 0.8 for pause in gaps(fake.api_requests))


async def test_exhausted_maxlag_retries_raise_503(fake: FakeCommons) -> None:
    fake.lag_replicas(3, lag=7)
    async with client_for(fake, max_retry_after=0.01) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"])
    assert raised.value.status == 503
    assert "lag 7 s" in raised.value.message


async def test_a_maxlag_retry_after_beyond_the_deadline_fails_at_once(fake: FakeCommons) -> None:
    fake.lag_replicas(1, lag=7)
    async with client_for(fake) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve(["Portrait.jpg"], deadline=in_seconds(2.0))
    assert raised.value.status == 503
    assert "asked to retry after 5 s" in raised.value.message
    assert len(fake.api_requests) == 1


async def test_maxlag_zero_sends_none(fake: FakeCommons) -> None:
    fake.lag_replicas(1, lag=7)
    async with client_for(fake, maxlag=0) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert ok(file).title == "File:Portrait.jpg"
    (request,) = fake.api_requests
    assert "maxlag" not in request.params


# --- web pages instead of media -------------------------------------------------------------

LONG_PAGE = b"<html><body>" + b"<p>busy</p>" * 10_000 + b"</body></html>"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", b"<!DOCTYPE html><html><body>Busy</body></html>"),
        ("text/plain", b"Error"),
        ("application/json", b'{"error": "busy"}'),
        ("image/jpeg", b"\r\n  <!doctype html><html><body>Busy</body></html>"),
        ("image/jpeg", b"<HTML><BODY>Busy</BODY></HTML>"),
        ("image/jpeg", LONG_PAGE),
    ],
)
async def test_a_web_page_instead_of_the_file_is_an_upstream_error(
    fake: FakeCommons, content_type: str, body: bytes
) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        fake.fail_files(1, 200, body=body, content_type=content_type)
        result = await client.fetch(ok(file))
    assert error_code(result) == "fetch_failed"
    assert isinstance(result, ItemError) and status_of(result) == 502
    assert "127.0.0.1" in result.message
    assert content_type in result.message
    assert len(fake.file_requests) == 1


async def test_a_file_served_as_a_web_page_fails_as_upstream(fake: FakeCommons) -> None:
    async with client_for(fake) as client:
        (file,) = await client.resolve(["Not really an image.jpg"])
        assert (ok(file).mime, ok(file).mediatype) == ("image/jpeg", "BITMAP")
        (result,) = await fetch_all([Instance("Not really an image.jpg", None)], client)
    assert isinstance(result, ItemError)
    assert (result.code, status_of(result)) == ("fetch_failed", 502)
    assert "text/html" in result.message


# --- continuation and normalisation ---------------------------------------------------------


@pytest.fixture
def many() -> Iterator[FakeCommons]:
    files = {f"Item {i:02d}.png": image_bytes(40, 30, "PNG") for i in range(45)}
    with FakeCommons(files, {"Old item.png": "Item 07.png"}) as server:
        yield server


async def test_continue_is_followed_and_batches_merged(many: FakeCommons) -> None:
    many.batch_size = 16
    names = [f"Item_{i:02d}.png" for i in range(45)] + ["Old_item.png"]
    names += [f"Gone {i}.png" for i in range(4)]
    async with client_for(many) as client:
        results = await client.resolve(names)
    assert len(names) == 50
    assert [ok(r).title for r in results[:45]] == [f"File:Item {i:02d}.png" for i in range(45)]
    assert ok(results[45]).title == "File:Item 07.png"
    assert {error_code(r) for r in results[46:]} == {"file_not_found"}
    # 45 files and 4 missing ones in 16s: four answers, each continuing the previous one.
    requests = many.api_requests
    assert len(requests) == 4
    assert "iicontinue" not in requests[0].params
    for request in requests[1:]:
        assert request.params["continue"] == "||"
        assert request.params["titles"] == requests[0].params["titles"]
    assert len({r.params["iicontinue"] for r in requests[1:]}) == 3


async def test_endless_continuation_is_cut_off(many: FakeCommons) -> None:
    many.batch_size = 1
    async with client_for(many) as client:
        with pytest.raises(CommonsUnavailable) as raised:
            await client.resolve([f"Item {i:02d}.png" for i in range(45)])
    assert raised.value.status == 502
    assert "continue" in raised.value.message
    assert len(many.api_requests) == MAX_CONTINUATIONS + 1


async def test_two_hop_normalisation_is_followed(fake: FakeCommons) -> None:
    """MediaWiki reports composing a decomposed title and then its spelling as two hops."""
    sent = unicodedata.normalize("NFD", "file:Crème_brûlée.jpg")
    params = {
        "action": "query",
        "prop": "imageinfo",
        "iiprop": commons.IIPROP,
        "titles": sent,
        "format": "json",
        "formatversion": "2",
    }
    async with httpx.AsyncClient() as http:
        query = (await http.post(fake.api_url, data=params)).json()["query"]
    composed = unicodedata.normalize("NFC", sent)
    assert query["normalized"] == [
        {"fromencoded": True, "from": quote(sent, safe=""), "to": composed},
        {"fromencoded": False, "from": composed, "to": "File:Crème brûlée.jpg"},
    ]
    assert ok(commons._match([sent], [query])[sent]).title == "File:Crème brûlée.jpg"
    # Our client composes names before sending them: one hop.
    async with client_for(fake) as client:
        (file,) = await client.resolve([sent])
    assert ok(file).title == "File:Crème brûlée.jpg"


# --- Host header and settings ---------------------------------------------------------------


async def test_the_host_header_goes_to_the_api_only(fake: FakeCommons) -> None:
    async with client_for(fake, api_host_header="commons.wikimedia.org") as client:
        files = [ok(r) for r in await client.resolve(["Portrait.jpg", "Panorama.jpg"])]
        for file in files:
            assert isinstance(await client.fetch(file), bytes)
    own_host = httpx.URL(fake.base_url).netloc.decode()
    assert {r.host for r in fake.api_requests} == {"commons.wikimedia.org"}
    assert {r.host for r in fake.file_requests} == {own_host}


async def test_settings_reach_the_client(fake: FakeCommons) -> None:
    settings = Settings(
        commons_api_url=fake.api_url,
        commons_upload_hosts=(),
        commons_api_host_header="commons.wikimedia.org",
        commons_maxlag=3,
        commons_max_retry_after_s=0.2,
    )
    fake.fail_api(1, 503, retry_after=60)
    async with commons_client(settings) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
    assert ok(file).title == "File:Portrait.jpg"
    assert {(r.host, r.params["maxlag"]) for r in fake.api_requests} == {
        ("commons.wikimedia.org", "3")
    }
    assert gaps(fake.api_requests)[0] < 1


async def test_upload_hosts_are_also_allowed_over_https(fake: FakeCommons) -> None:
    """An internal API is plain HTTP, yet the file URLs it lists are HTTPS."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client_for(fake, upload_hosts=(f"127.0.0.1:{port}",), retries=0) as client:
        (file,) = await client.resolve(["Portrait.jpg"])
        elsewhere = replace(ok(file), url=f"https://127.0.0.1:{port}/original/Portrait.jpg")
        with pytest.raises(CommonsUnavailable):  # fetched (nothing listens), not refused
            await client.fetch(elsewhere)
        elsewhere = replace(elsewhere, url=f"https://127.0.0.1:{port + 1}/original/Portrait.jpg")
        assert error_code(await client.fetch(elsewhere)) == "url_not_allowed"


class _CannedHandler(BaseHTTPRequestHandler):
    """Answers every request with the stand-in's ``answer`` bytes, with or without a
    Content-Length (without one the body ends when the connection closes)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer, declare = self.server.fake.answer, self.server.fake.declare
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declare:
            self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class CannedApi(LocalServer):
    """An API endpoint that answers what a test tells it to, however broken."""

    def __init__(self, answer: bytes, declare: bool = True) -> None:
        self.answer = answer
        self.declare = declare
        super().__init__(_CannedHandler)

    @property
    def api_url(self) -> str:
        return self.base_url + "/w/api.php"


def page(**info: Any) -> bytes:
    url = "https://upload.wikimedia.org/wikipedia/commons/a/ab/A.jpg"
    entry = {"url": url, "width": 800, "height": 600, "size": 1000, "sha1": "a" * 40,
             "mime": "image/jpeg", "mediatype": "BITMAP", "thumbwidth": 330, "thumbheight": 248,
             "thumburl": url, **info}
    return orjson.dumps({"query": {"pages": [{"title": "File:A.jpg", "imageinfo": [entry]}]}})


@pytest.mark.parametrize("info", [{"width": "wide"}, {"sha1": 12}, {"thumburl": ["x"]},
                                  {"size": True}, {"thumbheight": 1.5}, {"url": None},
                                  {"thumbwidth": None}])
async def test_an_answer_with_fields_of_the_wrong_type_is_a_502_for_its_names(info: dict) -> None:
    """A malformed answer is Commons failing (every name in it alike), never a crash later."""
    with CannedApi(page(**info)) as api:
        async with CommonsClient(api.api_url, user_agent=UA, backoff=0.01) as client:
            with pytest.raises(CommonsUnavailable, match="unexpected format") as raised:
                await client.resolve(["A.jpg"])
    assert raised.value.status == 502


async def test_a_url_that_is_not_valid_is_never_fetched() -> None:
    with CannedApi(page(thumburl="http://[::1/A.jpg")) as api:
        async with CommonsClient(api.api_url, user_agent=UA, backoff=0.01) as client:
            (found,) = await client.resolve(["A.jpg"])
            fetched = await client.fetch(ok(found))
    assert error_code(fetched) == "url_not_allowed" and status_of(fetched) == 502
    assert "not valid" in fetched.message


@pytest.mark.parametrize("declare", [True, False])
async def test_an_api_answer_over_the_limit_is_refused(declare: bool) -> None:
    padding = b" " * commons.MAX_API_ANSWER_BYTES
    with CannedApi(page()[:-1] + padding + b"}", declare=declare) as api:
        async with CommonsClient(api.api_url, user_agent=UA, backoff=0.01) as client:
            with pytest.raises(CommonsUnavailable, match=f"more than {commons.MAX_API_ANSWER_BYTES} bytes"):
                await client.resolve(["A.jpg"])


async def test_a_download_is_bounded_before_it_starts() -> None:
    """What the download budget reserves: the size of an original, and of a GIF's thumbnail
    (every frame); a JPEG or PNG thumbnail's pixels as RGBA; within the fetch limit."""
    async with CommonsClient("https://commons.wikimedia.org/w/api.php", user_agent=UA,
                             max_fetch_bytes=10_000_000) as client:
        bound = client.fetch_bound
    thumb = CommonsFile(title="File:A.jpg", url="https://upload.wikimedia.org/thumb/a/330px-A.jpg",
                        original_url="https://upload.wikimedia.org/a/A.jpg", mime="image/jpeg",
                        mediatype="BITMAP", size=8_000_000, width=4000, height=3000,
                        sha1="a" * 40, thumb_width=330, thumb_height=248)
    slack = 64 * 1024
    assert bound(thumb) == 330 * 248 * 4 + slack
    assert bound(thumb, original=True) == 8_000_000
    assert bound(replace(thumb, url=thumb.original_url, size=500)) == slack
    assert bound(replace(thumb, mime="image/gif")) == 8_000_000
    assert bound(replace(thumb, size=50_000_000), original=True) == 10_000_000
