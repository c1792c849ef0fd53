"""Locust users for `make soak` (loadtests/soak.py), with the step shape of locustfile.py.

Half of the images travel inline as base64, half by Commons file name (the transformer
fetches them); one request in ten carries four items of both kinds. Any status but 200, and
any item that comes back with an ``error``, is a failure. ``SOAK_INTERVAL`` sets how often
each ``SoakUser`` sends a request.
"""

from __future__ import annotations

import json
import os
import random
import time

import gevent
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests.locustfile import JSON, LOGO, NAMES, NSFW, StepShape, _instance

# Locust runs the shape class it finds in this module: StepShape, driven by LOADTEST_STEPS.
__all__ = ["CapacityUser", "SoakUser", "StepShape"]

INTERVAL = float(os.environ.get("SOAK_INTERVAL", "1"))


def _item(by_name: bool) -> dict:
    # Without names (a deployment whose Commons we don't know), everything goes inline.
    return {"filename": random.choice(NAMES)} if by_name and NAMES else _instance()


class CapacityUser(FastHttpUser):
    """Closed loop: the soak's request mix, each request as soon as the last one returned."""

    wait_time = constant(0)

    def post(self, path: str, instances: list[dict], name: str) -> None:
        body = json.dumps({"instances": instances})
        with self.client.post(path, data=body, headers=JSON, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            try:
                predictions = r.json()["predictions"]
            except (ValueError, KeyError, TypeError):
                r.failure(f"no predictions: {r.text[:200]}")
                return
            errors = [p["error"] for p in predictions if "error" in p]
            if len(predictions) != len(instances):
                r.failure(f"{len(predictions)} predictions for {len(instances)} instances")
            elif errors:
                r.failure(f"item error: {errors[0]}")
            else:
                r.success()

    @task(25)
    def logo_inline(self) -> None:
        self.post(LOGO, [_item(by_name=False)], "logo inline")

    @task(20)
    def nsfw_inline(self) -> None:
        self.post(NSFW, [_item(by_name=False)], "nsfw inline")

    @task(25)
    def logo_by_name(self) -> None:
        self.post(LOGO, [_item(by_name=True)], "logo by name")

    @task(20)
    def nsfw_by_name(self) -> None:
        self.post(NSFW, [_item(by_name=True)], "nsfw by name")

    @task(10)
    def four_items(self) -> None:
        items = [_item(by_name=False), _item(by_name=True), _item(by_name=False), _item(by_name=True)]
        self.post(random.choice((LOGO, NSFW)), items, "4 items, mixed")


class SoakUser(CapacityUser):
    """Open loop: one request every ``INTERVAL`` seconds on a fixed schedule, however long
    the answers take (a late request is followed at once by the next one due), so ``n``
    users send ``n / INTERVAL`` requests per second.

    Locust's ``constant_pacing`` measures each user's schedule from its creation, and a
    shape spawns all users in the same instant, so they would fire in bursts; a random
    phase per user spreads the arrivals evenly instead.
    """

    def on_start(self) -> None:
        gevent.sleep(random.uniform(0, INTERVAL))
        self.due = time.monotonic()

    def wait_time(self) -> float:
        self.due += INTERVAL
        return max(0.0, self.due - time.monotonic())
