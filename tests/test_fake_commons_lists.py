"""The MediaWiki stand-in's list modules, ``categorymembers`` and ``allimages``: MediaWiki's
answer format, limits, warnings and ``continue``; and its many-files generator."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from devtools.fake_commons import FakeCommons, image_bytes
from stack import free_port

ROOT = Path(__file__).resolve().parent.parent
JPEG, PNG = image_bytes(40, 30), image_bytes(40, 30, "PNG")


@pytest.fixture
def fake() -> Iterator[FakeCommons]:
    with FakeCommons({"Old.jpg": image_bytes(64, 48)}) as server:
        server.add_category("Sub b", parents=["Top"])
        server.add_category("Sub a", parents=["Top"])
        server.add_file("b.jpg", JPEG, categories=["Top"], timestamp="2026-11-01T00:00:02Z")
        server.add_file("A.png", PNG, categories=["Top"], timestamp="2026-11-01T00:00:01+00:00")
        server.add_file("In sub.jpg", image_bytes(40, 30), categories=["Sub a", "Top"])
        yield server


def query(fake: FakeCommons, **params: Any) -> dict[str, Any]:
    params = {"action": "query", "format": "json", "formatversion": "2", **params}
    response = httpx.get(fake.api_url, params=params)
    assert response.status_code == 200
    return response.json()


def follow(fake: FakeCommons, module: str, **params: Any) -> tuple[list[Any], list[dict]]:
    """Every item over all continuations, echoing ``continue`` as clients must; and each
    answer."""
    items: list[Any] = []
    answers: list[dict] = []
    resume: dict[str, Any] = {}
    while True:
        answer = query(fake, list=module, **params, **resume)
        answers.append(answer)
        items += answer["query"][module]
        if "continue" not in answer:
            return items, answers
        resume = answer["continue"]


def test_categorymembers_answers_like_mediawiki(fake: FakeCommons) -> None:
    answer = query(fake, list="categorymembers", cmtitle="Category:Top", cmlimit="max")
    assert answer == {
        "batchcomplete": True,
        "query": {
            "categorymembers": [
                {"pageid": 200_002, "ns": 14, "title": "Category:Sub a"},
                {"pageid": 200_000, "ns": 14, "title": "Category:Sub b"},
                {"pageid": 3, "ns": 6, "title": "File:A.png"},
                {"pageid": 2, "ns": 6, "title": "File:B.jpg"},
                {"pageid": 4, "ns": 6, "title": "File:In sub.jpg"},
            ]
        },
    }


def test_categorymembers_filters_by_type_and_namespace(fake: FakeCommons) -> None:
    files = query(fake, list="categorymembers", cmtitle="Category:Top", cmtype="file")
    assert [m["ns"] for m in files["query"]["categorymembers"]] == [6, 6, 6]
    subcats = query(fake, list="categorymembers", cmtitle="Category:Top", cmnamespace="14")
    assert [m["title"] for m in subcats["query"]["categorymembers"]] == [
        "Category:Sub a", "Category:Sub b",
    ]  # fmt: skip
    typed = query(fake, list="categorymembers", cmtitle="category:Top_", cmprop="title|type")
    assert typed["query"]["categorymembers"][0] == {
        "ns": 14, "title": "Category:Sub a", "type": "subcat",
    }  # fmt: skip


def test_categorymembers_continues_in_pages(fake: FakeCommons) -> None:
    items, answers = follow(fake, "categorymembers", cmtitle="Category:Top", cmlimit=2)
    assert [m["title"] for m in items] == [
        "Category:Sub a", "Category:Sub b", "File:A.png", "File:B.jpg", "File:In sub.jpg",
    ]  # fmt: skip
    assert len(answers) == 3
    assert answers[0]["continue"] == {"cmcontinue": "file|412E504E47|3", "continue": "-||"}
    assert all(a["batchcomplete"] is True for a in answers)


def test_categorymembers_default_limit_is_10_and_max_is_500(fake: FakeCommons) -> None:
    fake.add_many(600, categories=["Large"])
    assert len(query(fake, list="categorymembers", cmtitle="Category:Large")["query"][
        "categorymembers"]) == 10  # fmt: skip
    answer = query(fake, list="categorymembers", cmtitle="Category:Large", cmlimit=5000)
    assert len(answer["query"]["categorymembers"]) == 500
    assert answer["warnings"] == {
        "categorymembers": {"warnings": "cmlimit may not be over 500 (set to 5000) for users"}
    }
    items, _ = follow(fake, "categorymembers", cmtitle="Category:Large", cmlimit="max")
    assert len({m["title"] for m in items}) == 600


def test_categorymembers_errors(fake: FakeCommons) -> None:
    empty = query(fake, list="categorymembers", cmtitle="Category:Nothing here")
    assert empty == {"batchcomplete": True, "query": {"categorymembers": []}}
    assert query(fake, list="categorymembers", cmtitle="File:A.png")["error"]["code"] == (
        "invalidcategory"
    )
    bad = query(fake, list="categorymembers", cmtitle="Category:Top", cmcontinue="nonsense")
    assert bad["error"]["code"] == "badcontinue"
    assert query(fake, list="categorymembers")["error"]["code"] == "invalidparammix"


def test_allimages_by_time_is_inclusive_and_follows_the_direction(fake: FakeCommons) -> None:
    window = {"aisort": "timestamp", "aiprop": "timestamp|sha1|size|mime"}
    newer = query(
        fake, list="allimages", aistart="2026-11-01T00:00:01Z", aiend="2026-11-01T00:00:02Z",
        **window,
    )["query"]["allimages"]  # fmt: skip
    assert newer[0] == {
        "name": "A.png",
        "timestamp": "2026-11-01T00:00:01Z",
        "sha1": hashlib.sha1(PNG).hexdigest(),
        "size": len(PNG),
        "width": 40,
        "height": 30,
        "mime": "image/png",
        "ns": 6,
        "title": "File:A.png",
    }
    assert [i["name"] for i in newer] == ["A.png", "B.jpg"]
    older = query(
        fake, list="allimages", aidir="older", aistart="20261101000002", aiend="2026-11-01",
        **window,
    )["query"]["allimages"]  # fmt: skip
    assert [i["name"] for i in older] == ["B.jpg", "A.png"]


def test_allimages_continues_by_timestamp_and_name(fake: FakeCommons) -> None:
    fake.add_many(25, first_upload="2026-12-01T00:00:00Z", interval_s=0.5)  # pairs share a second
    items, answers = follow(
        fake, "allimages", aisort="timestamp", aistart="2026-12-01T00:00:00Z", ailimit=4
    )
    # The generated images take turns among four JPEGs and four PNGs.
    expected = [f"File:Bulk {i + 1:06d}.{'jpg' if i % 8 < 4 else 'png'}" for i in range(25)]
    assert [i["title"] for i in items] == expected
    assert answers[0]["continue"] == {
        "aicontinue": "20261201000002|Bulk_000005.png", "continue": "-||",
    }  # fmt: skip
    assert len(answers) == 7


def test_allimages_by_name_and_its_errors(fake: FakeCommons) -> None:
    names, _ = follow(fake, "allimages", ailimit=1)
    assert [i["name"] for i in names] == ["A.png", "B.jpg", "In_sub.jpg", "Old.jpg"]
    ranged = query(fake, list="allimages", aifrom="b.jpg", aito="In sub.jpg", aiprop="")
    assert [i["title"] for i in ranged["query"]["allimages"]] == ["File:B.jpg", "File:In sub.jpg"]
    assert query(fake, list="allimages", aistart="2026-01-01")["error"]["code"] == "badparams"
    assert query(fake, list="allimages", aisort="timestamp", aifrom="A")["error"]["code"] == (
        "badparams"
    )
    bad = query(fake, list="allimages", aisort="timestamp", aistart="yesterday")
    assert bad["error"] == {
        "code": "badtimestamp",
        "info": 'Invalid value "yesterday" for timestamp parameter "aistart".',
        "docref": "See /w/api.php for API usage.",
    }


def test_imageinfo_reports_the_upload_time(fake: FakeCommons) -> None:
    answer = query(fake, prop="imageinfo", iiprop="timestamp", titles="File:B.jpg|File:Old.jpg")
    stamps = {p["title"]: p["imageinfo"][0]["timestamp"] for p in answer["query"]["pages"]}
    assert stamps == {"File:B.jpg": "2026-11-01T00:00:02Z", "File:Old.jpg": "2024-01-01T00:00:00Z"}


def test_ten_thousand_distinct_small_images_in_seconds(fake: FakeCommons) -> None:
    started = time.monotonic()
    titles = fake.add_many(10_000, prefix="Many")
    assert time.monotonic() - started < 10
    assert len(set(titles)) == 10_000
    listed, _ = follow(fake, "allimages", aiprop="sha1", ailimit="max")
    assert len({i["sha1"] for i in listed if i["name"].startswith("Many_")}) == 10_000
    answer = query(fake, prop="imageinfo", iiprop="url|size", iiurlwidth=330, titles=titles[-1])
    info = answer["query"]["pages"][-1]["imageinfo"][0]
    # Served as originals at the first thumbnail width, big enough for the models.
    assert info["thumburl"] == info["url"] and min(info["width"], info["height"]) >= 224
    for title in titles[:16]:
        data = httpx.get(fake.original_url(title)).content
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.size == (320, 240)


def test_the_command_line_serves_generated_files_in_a_category() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_commons", "--many", "120", "--category", "Gen",
         "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout and "serving 120 files" in process.stdout.readline()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/w/api.php",
            params={"action": "query", "list": "categorymembers", "cmtitle": "Category:Gen",
                    "cmlimit": "max", "format": "json", "formatversion": "2"},
        ).json()  # fmt: skip
        assert len(answer["query"]["categorymembers"]) == 120
    finally:
        process.terminate()
        process.wait(timeout=10)
