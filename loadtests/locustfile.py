"""Locust users for the moderation service; `make loadtest` runs them (loadtests/run.py).

Payload files come from ``LOADTEST_PAYLOADS`` (written by run.py from registry-package
images); ``LOADTEST_COMMONS_NAMES`` lists the file names the Commons behind the target
knows, for lookups by name. Pick users on the command line (``locust ... MixedUser``);
the step shape below drives them.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

from locust import LoadTestShape, between, task
from locust.contrib.fasthttp import FastHttpUser

from preprocessing.specs import SPECS, VIDEO_MODEL

PAYLOADS = Path(os.environ.get("LOADTEST_PAYLOADS", "build/loadtest/payloads"))
NAMES = [n for n in os.environ.get("LOADTEST_COMMONS_NAMES", "").split("\n") if n]
LOGO = "/v1/models/logo-detection:predict"
NSFW = "/v1/models/nsfw-detection:predict"
VIDEO = f"/v1/models/{VIDEO_MODEL}:predict"
JSON = {"Content-Type": "application/json"}


def _load(suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    files = sorted(p for p in PAYLOADS.glob("*") if p.suffix.lower() in suffixes)
    return [(p.name, base64.b64encode(p.read_bytes()).decode()) for p in files]


IMAGES = _load((".jpg", ".jpeg", ".png"))
VIDEOS = _load((".webm", ".mp4", ".ogv"))


def _instance(key: str = "image", pool: list[tuple[str, str]] = IMAGES) -> dict:
    name, data = random.choice(pool)
    return {"filename": name, key: data}


class _Base(FastHttpUser):
    abstract = True
    wait_time = between(0.0, 0.2)

    def post(self, path: str, instances: list, name: str, expect: int = 200) -> None:
        body = json.dumps({"instances": instances})
        with self.client.post(path, data=body, headers=JSON, name=name, catch_response=True) as r:
            if r.status_code != expect:
                r.failure(f"expected {expect}, got {r.status_code}: {r.text[:200]}")
            elif expect == 200 and len(r.json()["predictions"]) != len(instances):
                r.failure("prediction count differs from instance count")
            else:
                r.success()


class LogoBase64User(_Base):
    """Today's Lift Wing client: one base64 image per request, ``target: logo``."""

    @task
    def logo(self) -> None:
        self.post(LOGO, [{**_instance(), "target": "logo"}], "logo base64")


class LogoByNameUser(_Base):
    """Lookups by Commons file name: the transformer resolves and fetches thumbnails."""

    @task
    def logo_by_name(self) -> None:
        self.post(LOGO, [{"filename": random.choice(NAMES)}], "logo by name")


class NsfwImageUser(_Base):
    @task
    def nsfw(self) -> None:
        self.post(NSFW, [_instance()], "nsfw base64")


class ImageModelsUser(_Base):
    """One inline image to every image model the specs declare, in turn: a model added to
    the specs is load-tested without a user of its own."""

    @task
    def every_model(self) -> None:
        for spec in SPECS:
            self.post(f"/v1/models/{spec.name}:predict", [_instance()], f"{spec.name} base64")


class NsfwVideoUser(_Base):
    @task
    def video(self) -> None:
        self.post(VIDEO, [_instance("video", VIDEOS)], "nsfw video base64")


class MixedUser(_Base):
    """Production-like traffic: mostly single files, some 50-file batches, some bad input."""

    @task(40)
    def logo_single(self) -> None:
        self.post(LOGO, [_instance()], "mixed logo single")

    @task(25)
    def nsfw_single(self) -> None:
        self.post(NSFW, [_instance()], "mixed nsfw single")

    @task(15)
    def by_name(self) -> None:
        if NAMES:
            self.post(LOGO, [{"filename": random.choice(NAMES)}], "mixed logo by name")

    @task(3)
    def batch_of_50(self) -> None:
        instances = [_instance() for _ in range(50)]
        self.post(random.choice((LOGO, NSFW)), instances, "mixed batch of 50")

    @task(7)
    def bad_base64(self) -> None:
        self.post(LOGO, [{"filename": "bad.jpg", "image": "not base64!"}], "mixed bad input", 400)

    @task(5)
    def mixed_good_and_bad(self) -> None:
        instances = [_instance(), {"filename": "x.png", "image": "AAAA"}, _instance()]
        self.post(NSFW, instances, "mixed partial errors")

    @task(5)
    def video(self) -> None:
        if VIDEOS:
            self.post(VIDEO, [_instance("video", VIDEOS)], "mixed nsfw video")


class StepShape(LoadTestShape):
    """``LOADTEST_STEPS="users:seconds,..."``: hold each user count for its seconds, then stop."""

    steps = [
        (int(users), float(seconds))
        for users, seconds in (
            step.split(":") for step in os.environ.get("LOADTEST_STEPS", "2:20,8:20,16:30").split(",")
        )
    ]

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for users, seconds in self.steps:
            if elapsed < seconds:
                return users, max(1.0, float(users))
            elapsed -= seconds
        return None
