"""Async client for our scoring service's predict API, for bulk callers.

One `ScoringService.score` call is one POST of up to 50 titles by name. The whole request is
retried when the service or its upstreams failed as a whole (502/503/504, connection errors,
timeouts), after the Retry-After it sends (overload, Triton restarting) or a jittered
exponential backoff. What one item's failure means is left to the caller, who gets each
item's error code (`RETRYABLE_CODES` names those worth another try later); so does a
request still failing after the retries whose answer lists each item's error, so that a
batch of files that always time out cannot stop a backfill for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from bulk.retry import pause, retry_after
from moderation.policy import Policy
from preprocessing.specs import SPECS
from store import Key, Record
from store.scores import check_sha1
from transformer.errors import STATUS_BY_CODE

MAX_TITLES = 50
USER_AGENT = (
    "commons-moderation-backfill/0.1 "
    "(https://wikitech.wikimedia.org/wiki/Machine_Learning/LiftWing; ml@wikimedia.org) httpx"
)
# Per model, the labels of the prediction and of 1 - prediction (its "out_of_domain").
LABELS = {spec.name: (spec.target, spec.labels[0]) for spec in SPECS}
# A server bug answered for a whole request: the service's 500.
INTERNAL_ERROR = "internal_error"
# Item codes that say an upstream (Commons, Triton, the deadline) failed, not the file: a
# later try may succeed. Triton's code is listed for services that report it per item.
RETRYABLE_CODES = frozenset(
    {code for code, status in STATUS_BY_CODE.items() if status >= 500}
    | {"triton_unavailable", INTERNAL_ERROR}
)
# 429: a gateway in front of the service shedding load.
_RETRIED_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class Outcome:
    """What the service said about one title: scores, or an error code and message."""

    title: str
    sha1: str | None
    scores: dict[str, float] | None
    code: str | None
    message: str | None
    version: str
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None and self.scores is not None


class ServiceError(Exception):
    """The service refused the request as a whole for a reason retrying cannot fix (an
    unknown model, a malformed answer): a configuration problem, not a file's."""


class ServiceUnavailable(ServiceError):
    """The whole request failed after every retry (5xx, connection errors, timeouts) with
    no answer for each item."""


class ScoringService:
    """Scores titles with ``model`` at ``url`` over one pooled connection. Use as
    ``async with`` or call `aclose`. ``requests`` counts the POSTs sent, retries included."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 5,
        max_connections: int = 64,
        user_agent: str = USER_AGENT,
        backoff_s: float = 1.0,
        max_pause_s: float = 60.0,
    ) -> None:
        self.model = model
        self.requests = 0
        self._url = f"{url.rstrip('/')}/v1/models/{model}:predict"
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_pause_s = max_pause_s
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def __aenter__(self) -> ScoringService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def score(self, titles: list[str]) -> list[Outcome]:
        """One `Outcome` per title, in order. Raises `ServiceUnavailable` when the service
        failed as a whole after the retries, `ServiceError` when it refused the request."""
        if not 0 < len(titles) <= MAX_TITLES:
            raise ValueError(f"score takes 1 to {MAX_TITLES} titles, not {len(titles)}")
        body = {"instances": [{"filename": title} for title in titles]}
        failure, asked = "", None  # of the last failed attempt
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(
                    pause(attempt - 1, asked, backoff_s=self._backoff_s, max_s=self._max_pause_s)
                )
            self.requests += 1
            try:
                response = await self._http.post(self._url, json=body)
            except httpx.TransportError as exc:  # connection refused or reset, timeouts
                failure, asked = f"{type(exc).__name__}: {exc}", None
                continue
            if response.status_code not in _RETRIED_STATUSES:
                return self._outcomes(titles, response)
            failure, asked = _describe(response), retry_after(response)
            if attempt == self._retries and _predictions(response) is not None:
                return self._outcomes(titles, response)
        raise ServiceUnavailable(f"{self._url} failed {self._retries + 1} times; last: {failure}")

    def _outcomes(self, titles: list[str], response: httpx.Response) -> list[Outcome]:
        version = response.headers.get("x-model-version", "")
        if response.status_code == 500:
            # A server bug: no item got an answer; the titles may be retried once it is fixed.
            message = f"the service failed: {_describe(response)}"
            return [Outcome(t, None, None, INTERNAL_ERROR, message, version) for t in titles]
        predictions = _predictions(response)
        # 200; or every item failed, each one listed: 400 for client reasons, 5xx for
        # upstream ones.
        if response.status_code not in (200, 400, *_RETRIED_STATUSES) or predictions is None:
            raise ServiceError(f"{self._url} refused the request: {_describe(response)}")
        if len(predictions) != len(titles):
            raise ServiceError(
                f"{self._url} answered {len(predictions)} predictions for {len(titles)} titles"
            )
        return [
            self._outcome(title, item, version)
            for title, item in zip(titles, predictions, strict=True)
        ]

    def _outcome(self, title: str, item: Any, version: str) -> Outcome:
        if not isinstance(item, dict):
            return Outcome(title, None, None, "bad_answer", f"not an object: {item!r}", version)
        sha1 = _sha1(item.get("sha1"))
        if isinstance(error := item.get("error"), dict):
            code, message = str(error.get("code")), str(error.get("message", ""))
            return Outcome(title, sha1, None, code, message, version)
        try:
            prediction = float(item["prediction"])
            other = float(item["out_of_domain"])
        except (KeyError, TypeError, ValueError):
            return Outcome(title, sha1, None, "bad_answer", f"no scores in {item!r}", version)
        target, rest = LABELS.get(self.model, (str(item.get("target")), "out_of_domain"))
        scores = {target: prediction, rest: other}
        return Outcome(title, sha1, scores, None, None, version, bool(item.get("cached")))


def records(
    outcomes: Iterable[Outcome], model: str, *, cached: bool, policy: Policy
) -> list[Record]:
    """The scored outcomes with a SHA-1 and a model version, as score-store records with
    ``policy``'s decision: those the service answered from its store (``cached``) or those
    it scored now. Titles that are one file (duplicates, redirects) make one record with
    all their titles."""
    by_key: dict[Key, Outcome] = {}
    titles: dict[Key, list[str]] = {}
    for outcome in outcomes:
        if (
            outcome.ok
            and outcome.sha1
            and outcome.version
            and outcome.scores is not None
            and outcome.cached == cached
        ):
            key = Key(outcome.sha1, model, outcome.version)
            by_key.setdefault(key, outcome)
            titles.setdefault(key, []).append(outcome.title)
    return [
        policy.stamp(
            Record(key, dict(outcome.scores or {}), titles=tuple(dict.fromkeys(titles[key])))
        )
        for key, outcome in by_key.items()
    ]


def _sha1(value: Any) -> str | None:
    try:
        return check_sha1(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _predictions(response: httpx.Response) -> list[Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    predictions = body.get("predictions") if isinstance(body, dict) else None
    return predictions if isinstance(predictions, list) else None


def _describe(response: httpx.Response) -> str:
    """A status line and the start of the body, for messages."""
    text = response.text[:300].strip()
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")
