"""The score store in the transformer, over HTTP: transformers of their own with the store
on, in front of the session's Triton and the MediaWiki stand-in."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools import images
from devtools.fake_commons import FakeCommons
from moderation.policy import load_policy
from preprocessing import specs
from stack import Stack, free_port
from stack.launcher import commons_environment
from store import Key, Record, open_store
from transformer.config import Settings
from transformer.score_cache import ScoreCache

LOGO = "/v1/models/logo-detection:predict"
# How the transformer keys scores of inline bytes: the served model version, marked inline.
INLINE_VERSION = f"{specs.LOGO.version};inline"
NSFW = "/v1/models/nsfw-detection:predict"
FILES = 50


@pytest.fixture(scope="module")
def many_files(fake_commons: FakeCommons) -> list[str]:
    """Titles of distinct files that no other test module asks for."""
    names = [f"Store test {i}.png" for i in range(FILES)]
    for i, name in enumerate(names):
        fake_commons.add_file(name, images.encode(images.photo(96, 80, 1000 + i), "PNG"))
    return names


def transformer(stack: Stack, fake_commons: FakeCommons, logs: Path, **env: str) -> Stack:
    return Stack(
        start_triton=False,
        triton_ports=stack.triton_ports,
        env={**commons_environment(fake_commons.api_url), **env},
        logs=logs,
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/scores.sqlite3"


@pytest.fixture(scope="module")
def cached(
    stack: Stack, fake_commons: FakeCommons, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with transformer(stack, fake_commons, tmp_path_factory.mktemp("cached"),
                     DATABASE_URL=database) as served:
        yield served


def by_name(names: list[str]) -> dict:
    return {"instances": [{"filename": name} for name in names]}


def predict(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def settle(database: str, keys: list[Key], timeout_s: float = 5.0) -> None:
    """Writes happen after the response: wait until they are in."""
    store = open_store(database, migrate=False)
    try:
        deadline = time.monotonic() + timeout_s
        while len(store.get(keys)) < len(keys):
            assert time.monotonic() < deadline, "the scores never reached the store"
            time.sleep(0.05)
    finally:
        store.dispose()


def test_a_by_name_hit_skips_the_download_and_keeps_the_scores(
    cached: Stack, fake_commons: FakeCommons, many_files: list[str], database: str
) -> None:
    name = many_files[0]
    first = predict(cached.url, LOGO, by_name([name]))
    assert first.status_code == 200, first.text
    (miss,) = first.json()["predictions"]
    assert miss["cached"] is False and re.fullmatch(r"[0-9a-f]{40}", miss["sha1"])
    settle(database, [Key(miss["sha1"], "logo-detection", first.headers["x-model-version"])])

    downloads = len(fake_commons.file_requests)
    second = predict(cached.url, LOGO, by_name([name]))
    assert second.status_code == 200, second.text
    (hit,) = second.json()["predictions"]
    assert hit["cached"] is True
    assert {k: hit[k] for k in ("sha1", "prediction", "out_of_domain", "target")} == {
        k: miss[k] for k in ("sha1", "prediction", "out_of_domain", "target")
    }
    assert second.headers["x-model-version"] == first.headers["x-model-version"]
    assert len(fake_commons.file_requests) == downloads, "a hit downloaded the file"

    # The same bytes under another name, and the other model, are keyed apart.
    other = predict(cached.url, NSFW, by_name([name])).json()["predictions"][0]
    assert other["cached"] is False and other["sha1"] == miss["sha1"]


def test_inline_bytes_are_keyed_by_their_own_sha1(cached: Stack, database: str) -> None:
    data = images.encode(images.photo(120, 90, 4242), "JPEG", quality=85)
    body = {"instances": [{"image": base64.b64encode(data).decode()}]}
    first = predict(cached.url, LOGO, body).json()["predictions"][0]
    assert first["sha1"] == hashlib.sha1(data).hexdigest() and first["cached"] is False
    settle(database, [Key(first["sha1"], "logo-detection", INLINE_VERSION)])
    second = predict(cached.url, LOGO, body).json()["predictions"][0]
    assert second["cached"] is True and second["prediction"] == first["prediction"]


def test_inline_bytes_never_answer_for_a_commons_file(
    cached: Stack, fake_commons: FakeCommons, database: str
) -> None:
    """A client's bytes must not decide a Commons file's scores (and a file looked up by
    name is scored from its thumbnail, not from the bytes as uploaded)."""
    data = images.encode(images.photo(200, 150, 4343), "PNG")
    fake_commons.add_file("Store test inline first.png", data)
    body = {"instances": [{"image": base64.b64encode(data).decode()}]}
    inline = predict(cached.url, LOGO, body).json()["predictions"][0]
    settle(database, [Key(inline["sha1"], "logo-detection", INLINE_VERSION)])
    answer = predict(cached.url, LOGO, by_name(["Store test inline first.png"]))
    (looked_up,) = answer.json()["predictions"]
    assert looked_up["sha1"] == inline["sha1"] and looked_up["cached"] is False


def test_a_fully_cached_request_of_50_titles_needs_one_api_call(
    cached: Stack, fake_commons: FakeCommons, many_files: list[str], database: str
) -> None:
    first = predict(cached.url, NSFW, by_name(many_files))
    assert first.status_code == 200, first.text
    predictions = first.json()["predictions"]
    assert len(predictions) == FILES and all("error" not in p for p in predictions)
    version = first.headers["x-model-version"]
    settle(database, [Key(p["sha1"], "nsfw-detection", version) for p in predictions])

    api, files = len(fake_commons.api_requests), len(fake_commons.file_requests)
    second = predict(cached.url, NSFW, by_name(many_files))
    assert second.status_code == 200
    assert all(p["cached"] for p in second.json()["predictions"])
    assert len(fake_commons.api_requests) - api == 1
    assert len(fake_commons.file_requests) == files

    store = open_store(database, migrate=False)
    try:
        record = store.get([Key(predictions[3]["sha1"], "nsfw-detection", version)])
    finally:
        store.dispose()
    (stored,) = record.values()
    assert stored.titles == (f"File:{many_files[3]}",)
    assert stored.mime == "image/png" and stored.size and stored.scored_at is not None
    assert stored.scores["nsfw"] == pytest.approx(predictions[3]["prediction"])
    # Written with the packaged policy's decision on those scores.
    assert (stored.state, stored.reason) == load_policy().decide("nsfw-detection", stored.scores)
    assert stored.policy_version == load_policy().version


def test_a_video_report_is_stored_per_scoring_variant(
    cached: Stack, fake_commons: FakeCommons
) -> None:
    path = "/v1/models/nsfw-video-detection:predict"
    body = by_name(["Skin clip.webm"])
    first = predict(cached.url, path, body)
    assert first.status_code == 200, first.text
    (miss,) = first.json()["predictions"]
    assert miss["cached"] is False and miss["frames_scored"] > 0

    downloads = len(fake_commons.file_requests)
    deadline = time.monotonic() + 5
    while not (hit := predict(cached.url, path, body).json()["predictions"][0])["cached"]:
        assert time.monotonic() < deadline, "the report never reached the store"
        time.sleep(0.05)
    assert {k: v for k, v in hit.items() if k != "cached"} == {
        k: v for k, v in miss.items() if k != "cached"
    }
    assert len(fake_commons.file_requests) == downloads

    # Another threshold shapes another report: not the stored one.
    (other,) = predict(cached.url, path, {**body, "threshold": 0.3}).json()["predictions"]
    assert other["cached"] is False and other["sha1"] == miss["sha1"]


def test_a_store_that_is_down_is_bypassed_and_counted(
    stack: Stack, fake_commons: FakeCommons, many_files: list[str], tmp_path: Path
) -> None:
    # A PostgreSQL server that does not exist: nothing listens on that socket.
    nowhere = f"postgresql+psycopg://nobody@/scores?host={tmp_path}&port={free_port()}"
    with transformer(stack, fake_commons, tmp_path, DATABASE_URL=nowhere) as served:
        for _ in range(2):
            answer = predict(served.url, LOGO, by_name(many_files[:2]))
            assert answer.status_code == 200, answer.text
            assert [p["cached"] for p in answer.json()["predictions"]] == [False, False]
        metrics = httpx.get(served.url + "/metrics", timeout=10).text
    bypassed = re.findall(r'transformer_score_store_bypassed_total\{[^}]*\} (\S+)', metrics)
    assert sum(float(v) for v in bypassed) >= 2


def test_switched_off_the_store_is_never_opened(
    stack: Stack, fake_commons: FakeCommons, many_files: list[str], tmp_path: Path
) -> None:
    database = tmp_path / "never.sqlite3"
    with transformer(stack, fake_commons, tmp_path, SCORE_STORE="false",
                     DATABASE_URL=f"sqlite:///{database}") as served:
        for _ in range(2):
            (prediction,) = predict(served.url, LOGO, by_name(many_files[:1])).json()["predictions"]
            assert prediction["cached"] is False
    assert not database.exists()


async def test_a_slow_store_is_abandoned_then_left_alone() -> None:
    class Slow:
        calls = 0

        def get(self, keys: list[Key]) -> dict:
            Slow.calls += 1
            time.sleep(0.5)
            return {}

        def dispose(self) -> None:
            pass

    cache = ScoreCache(lambda: Slow(), timeout_s=0.1, retry_s=30, max_pending_writes=4)
    keys = [Key("0" * 40, "logo-detection", "2")]
    start = time.monotonic()
    labels = ("out_of_domain", "logo")
    assert await cache.lookup("logo-detection", keys, labels) == [None]
    assert await cache.lookup("logo-detection", keys, labels) == [None]
    assert time.monotonic() - start < 0.4
    assert Slow.calls == 1, "the store was called again while resting"
    await asyncio.sleep(0.5)
    cache.close()


async def test_new_scores_are_stored_with_the_policys_decision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/scores.sqlite3"
    policy = load_policy()
    cache = ScoreCache(lambda: open_store(url), timeout_s=5, retry_s=0, max_pending_writes=4,
                       policy=policy)
    flagged = Record(Key("b" * 40, "nsfw-detection", "1"), {"nsfw": 0.99, "sfw": 0.01})
    fine = Record(Key("c" * 40, "logo-detection", "2"), {"logo": 0.1, "out_of_domain": 0.9})
    cache.remember([flagged, fine])
    store = open_store(url)
    try:
        deadline = time.monotonic() + 5
        while len(got := store.get([flagged.key, fine.key])) < 2:
            assert time.monotonic() < deadline, "the scores never reached the store"
            await asyncio.sleep(0.05)
    finally:
        store.dispose()
        cache.close()
    assert got[flagged.key].state == "withhold_all" and got[fine.key].state == "ok"
    assert {r.policy_version for r in got.values()} == {policy.version}
    assert got[flagged.key].reason == policy.decide("nsfw-detection", flagged.scores).reason


def test_a_bad_moderation_policy_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: '1'\nmodels:\n  nsfw-detection: {label: nsfw}\n")
    settings = Settings(moderation_policy=str(bad), database_url=f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ValueError, match="models.nsfw-detection.thresholds: Field required"):
        ScoreCache.from_settings(settings)
