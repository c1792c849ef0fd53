"""The moderation policy: which review state a model's score puts a file in.

A policy is a versioned YAML file (the packaged default is ``moderation/policy.yaml``). For
each model it names the score it reads and, per state, the lowest score that reaches it; a
score below every threshold is ``ok``. Each stored result records the state and the policy
version that decided it, so a new policy can be applied to stored scores without scoring
anything again (``store.review.apply_policy``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from store import Record
from store.review import OK, STATES
from store.schema import MODEL_LENGTH, POLICY_VERSION_LENGTH

# STATES, review priority highest first: withheld from everyone, withheld from "popular"
# listings, for a human to look at, nothing to do. The store defines them: its queue
# orders by them.
__all__ = [
    "DEFAULT_POLICY",
    "OK",
    "STATES",
    "Decision",
    "Judgement",
    "ModelPolicy",
    "Policy",
    "load_policy",
    "undecided_counts",
]

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
# Longer reasons are cut in the log: a stored value the policy could not read may be long.
LOGGED_REASON_LENGTH = 300

log = logging.getLogger("moderation")

# (policy version, model) -> results that policy could not decide, in this process.
_undecided: Counter[tuple[str, str]] = Counter()
_undecided_lock = threading.Lock()


def undecided_counts() -> dict[tuple[str, str], int]:
    """How many results each (policy version, model) left undecided in this process."""
    with _undecided_lock:
        return dict(_undecided)


class Decision(NamedTuple):
    state: str
    reason: str


class Judgement(NamedTuple):
    """A decision, or why there is none: ``state`` and ``score`` are None when the policy
    cannot read the scores, and ``reason`` says why."""

    state: str | None
    reason: str
    score: float | None


class ModelPolicy(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # The key of the model's scores that the thresholds apply to (its positive class).
    label: str = Field(min_length=1)
    # State -> the lowest score that puts a file in it; states absent here are never given.
    thresholds: dict[str, float] = Field(min_length=1)
    # "max": for a video, read the highest frame score from its report (``video["prediction"]``).
    video_score: Literal["max"] | None = None
    # Where the thresholds come from: measured (and on what) or a convention.
    basis: str = ""

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for state, value in thresholds.items():
            if state not in STATES or state == OK:
                raise ValueError(
                    f"unknown state {state!r}: thresholds are for {', '.join(STATES[:-1])}"
                )
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"threshold of {state} is {value!r}, not within [0, 1]")
        ordered = sorted(thresholds.items(), key=lambda item: STATES.index(item[0]))
        for (higher, high), (lower, low) in pairwise(ordered):
            if high < low:
                raise ValueError(
                    f"{higher} ({high}) must not be below {lower} ({low}): "
                    "a more severe state needs at least as high a score"
                )
        return dict(ordered)


class Policy(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=POLICY_VERSION_LENGTH, pattern=r"^\S+$")
    models: dict[str, ModelPolicy] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_model_names(self) -> Policy:
        for name in self.models:
            if not name or len(name) > MODEL_LENGTH:
                raise ValueError(f"model name {name!r} must be 1 to {MODEL_LENGTH} characters")
        return self

    def model(self, model: str) -> ModelPolicy:
        try:
            return self.models[model]
        except KeyError:
            raise ValueError(
                f"policy {self.version} has no rule for model {model!r} "
                f"(it covers {', '.join(sorted(self.models))})"
            ) from None

    def score(
        self, model: str, scores: dict[str, float], video: dict[str, Any] | None = None
    ) -> float:
        """The score the policy reads for ``model``: ``scores[label]``, or a video's max;
        ValueError, and nothing else, for anything it cannot read."""
        rule = self.model(model)
        if not isinstance(scores, dict):
            raise ValueError(f"{model} scores are {type(scores).__name__}, not a mapping")
        if video is not None and not isinstance(video, dict):
            raise ValueError(f"{model} video report is {type(video).__name__}, not a mapping")
        if rule.video_score == "max" and video is not None and "prediction" in video:
            value = video["prediction"]
            where = "video prediction"
        elif rule.label in scores:
            value = scores[rule.label]
            where = f"score {rule.label!r}"
        else:
            raise ValueError(f"{model} scores {sorted(scores)} lack {rule.label!r}")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{model} {where} is {value!r}, not a finite number")
        return float(value)

    def decide(
        self, model: str, scores: dict[str, float], video: dict[str, Any] | None = None
    ) -> Decision:
        rule = self.model(model)
        value = self.score(model, scores, video)
        video_max = rule.video_score == "max" and video is not None and "prediction" in video
        name = f"{rule.label} (highest frame)" if video_max else rule.label
        for state, threshold in rule.thresholds.items():
            if value >= threshold:
                return Decision(
                    state, f"{name} {value:.3f} ≥ {state} {threshold:g} (policy {self.version})"
                )
        lowest, threshold = list(rule.thresholds.items())[-1]
        return Decision(OK, f"{name} {value:.3f} < {lowest} {threshold:g} (policy {self.version})")

    def judge(
        self, model: str, scores: dict[str, float], video: dict[str, Any] | None = None
    ) -> Judgement:
        """``decide``, with what it cannot decide as a Judgement without a state, counted
        (``undecided_counts``) and logged: a warning for the 1st, 10th, 100th, ... result
        of a model, naming the model and the reason (never a file or its scores)."""
        try:
            score = self.score(model, scores, video)
            state, reason = self.decide(model, scores, video)
        except ValueError as exc:
            reason = f"not decided: {exc}"
            with _undecided_lock:
                _undecided[(self.version, model)] += 1
                count = _undecided[(self.version, model)]
            if count == 10 ** (len(str(count)) - 1):
                log.warning(
                    "policy %s could not decide %d result(s) of %s so far (they wait in the "
                    "review queue as undecided); the latest: %s",
                    self.version,
                    count,
                    model,
                    reason[:LOGGED_REASON_LENGTH],
                )
            return Judgement(None, reason, None)
        return Judgement(state, reason, score)

    def stamp(self, record: Record) -> Record:
        """``record`` with this policy's judgement on its scores: its decision, or for
        scores the policy cannot read no state and the reason (``judge``), as
        ``store.review.apply_policy`` stamps stored rows. Unchanged for a model the policy
        does not cover."""
        if record.key.model not in self.models:
            return record
        state, reason, score = self.judge(record.key.model, record.scores, record.video)
        return dataclasses.replace(
            record, state=state, reason=reason, policy_version=self.version, policy_score=score
        )


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path`` (the packaged default when None); ValueError naming the field
    when the file is unreadable or does not describe a valid policy."""
    source = DEFAULT_POLICY if path is None else Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"policy file {source}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"policy file {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"policy file {source} must be a mapping with version and models")
    if isinstance(raw.get("version"), int | float) and not isinstance(raw["version"], bool):
        raise ValueError(f"policy file {source}: version must be a quoted string, not a number")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"policy file {source}: {problems}") from None
