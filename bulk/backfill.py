"""``commons-backfill``: score every file of a title list, a category tree or a range of
uploads with one model, into the score store, resumably.

A job is the input, the model and the shard; its log in the store holds every title found,
in order, with its state (pending, done, error) and the enumeration's cursor. So the same
command started again resumes: the enumeration continues from its cursor and only pending
titles are scored. Enumeration and scoring run together: each enumerated page is saved with
its cursor in one transaction and wakes the scorer, which keeps ``--concurrency`` batches
of up to 50 pending titles in flight; a finished batch's scores go into the store, then its
titles are marked finished (one transaction each), then its rows are appended to the
outputs. Ctrl-C (or SIGTERM) stops taking batches and lets those in flight finish; a second
one cancels them, leaving their titles pending.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bulk import titles as enumerate_
from bulk.output import Outputs, row
from bulk.service import (
    MAX_TITLES,
    RETRYABLE_CODES,
    USER_AGENT,
    Outcome,
    ScoringService,
    ServiceError,
    records,
)
from moderation.policy import Policy, load_policy
from store import JobLog, ScoreStore, StoreError, open_store
from store.scores import DEFAULT_DATABASE_URL

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# The store's job names are at most this long.
MAX_JOB_NAME = 200
# What stops a run without being a bug: the failure is reported, pending titles stay.
_EXPECTED = (ServiceError, StoreError, enumerate_.EnumerationFailed, OSError)


class JobConflict(Exception):
    """The job name is taken by a job with another input, model or shard."""


class Model(StrEnum):
    logo = "logo-detection"
    nsfw = "nsfw-detection"


@dataclass(frozen=True)
class Source:
    """Where the titles come from: exactly one of a file, a category, a time range."""

    titles_file: Path | None = None
    category: str | None = None
    depth: int = 0
    uploads: tuple[str, str] | None = None

    def spec(self) -> dict[str, Any]:
        if self.titles_file:
            return {"titles": str(self.titles_file.resolve())}
        if self.category:
            return {"category": enumerate_.category_title(self.category), "depth": self.depth}
        assert self.uploads
        return {"uploads": list(self.uploads)}

    def pages(
        self, api: enumerate_.MediaWikiApi, cursor: dict[str, Any] | None, page_size: int
    ) -> AsyncIterator[enumerate_.Page]:
        if self.titles_file:
            return enumerate_.from_file(self.titles_file, cursor, page_size=page_size)
        if self.category:
            return enumerate_.from_category(
                api, self.category, self.depth, cursor, page_size=page_size
            )
        assert self.uploads
        return enumerate_.from_uploads(api, *self.uploads, cursor, page_size=page_size)


@dataclass(frozen=True)
class Config:
    source: Source
    model: str
    job: str
    service_url: str
    commons_api: str
    database_url: str
    concurrency: int = 4
    batch: int = MAX_TITLES
    shard: tuple[int, int] = (0, 1)
    jsonl: Path | None = None
    csv: Path | None = None
    retry_errors: bool = False
    user_agent: str = USER_AGENT
    page_size: int = enumerate_.PAGE_SIZE
    # Decides each stored result's review state, as the service's own writes do.
    policy: Policy = field(default_factory=load_policy)

    def spec(self) -> dict[str, Any]:
        """What makes the job: a saved job with another spec is not this one."""
        spec = {**self.source.spec(), "model": self.model, "shard": list(self.shard)}
        if self.source.titles_file:
            # The content too: a resumed job reads on from a byte offset, which means
            # nothing in a file edited since.
            with self.source.titles_file.open("rb") as handle:
                spec["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
        return spec


def in_shard(title: str, shard: tuple[int, int]) -> bool:
    """Whether ``title`` belongs to shard ``i`` of ``n``: a stable hash of the title, so
    every run and every machine splits the same way."""
    index, count = shard
    digest = hashlib.sha1(title.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def job_name(source: Source, model: str, shard: tuple[int, int]) -> str:
    """The default job name: readable, the same for the same command."""
    spec = source.spec()
    if "titles" in spec:
        what = f"titles:{spec['titles']}"
    elif "category" in spec:
        what = f"{spec['category']}:depth={spec['depth']}"
    else:
        what = "uploads:{}..{}".format(*spec["uploads"])
    name = f"{model}|{what}" + (f"|shard={shard[0]}/{shard[1]}" if shard[1] > 1 else "")
    if len(name) > MAX_JOB_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:16]
        name = f"{name[: MAX_JOB_NAME - 18]}~{digest}"
    return name


class Backfill:
    """One run of a job: `run` returns the summary and the exit status."""

    _log: JobLog
    _progress: tqdm

    def __init__(self, config: Config) -> None:
        self.config = config
        self.interrupts = 0
        self.failure: str | None = None
        self.requests = 0
        self._stopping = False
        self._enumerated = False
        self._wake = asyncio.Event()
        self._last_seq = -1
        self._inflight: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Task[None]] = set()
        self._finished: Counter[str] = Counter()  # this run's titles, by "done" / error code

    async def run(self) -> tuple[dict[str, Any], int]:
        """Raises `JobConflict`, and `StoreError` when the store cannot be opened."""
        config = self.config
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._interrupt)
        store = await asyncio.to_thread(open_store, config.database_url)
        try:
            self._log = JobLog(store, config.job)
            try:
                await asyncio.to_thread(self._log.start, config.spec())
            except ValueError as exc:
                raise JobConflict(str(exc)) from exc
            if config.retry_errors:
                again = await asyncio.to_thread(self._log.retry, RETRYABLE_CODES)
                log.warning("%d titles with retryable errors are pending again", again)
            self._enumerated = await asyncio.to_thread(lambda: self._log.enumerated)
            counts = await asyncio.to_thread(self._log.counts)
            self._progress = tqdm(
                total=sum(counts.values()),
                initial=counts["done"] + counts["error"],
                unit="title",
                desc=config.model,
                dynamic_ncols=True,
                disable=None,
            )
            await self._score_all(store)
            self._progress.close()
            return await self._summary(time.monotonic() - started), self._status()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await asyncio.to_thread(store.dispose)

    async def _score_all(self, store: ScoreStore) -> None:
        config = self.config
        outputs = Outputs(config.jsonl, config.csv)
        service = ScoringService(
            config.service_url,
            config.model,
            max_connections=config.concurrency,
            user_agent=config.user_agent,
        )
        api = enumerate_.MediaWikiApi(config.commons_api, user_agent=config.user_agent)
        enumeration = None if self._enumerated else asyncio.create_task(self._enumerate(api))
        try:
            await self._dispatch(service, store, outputs)
        finally:
            if enumeration:
                enumeration.cancel()
                await asyncio.gather(enumeration, return_exceptions=True)
            # A second Ctrl-C cancels what is still scoring, never what is being recorded.
            await asyncio.gather(*self._inflight, return_exceptions=True)
            await asyncio.gather(*self._recording, return_exceptions=True)
            self.requests = service.requests
            await service.aclose()
            await api.aclose()
            outputs.close()

    async def _dispatch(self, service: ScoringService, store: ScoreStore, outputs: Outputs) -> None:
        """Keep ``concurrency`` batches in flight until nothing is pending and the
        enumeration is over, or until told to stop."""
        while not self._stopping:
            self._wake.clear()
            if len(self._inflight) < self.config.concurrency:
                # Titles handed out are not asked for again: they stay pending until recorded.
                rows = await asyncio.to_thread(
                    self._log.pending, self.config.batch, after_seq=self._last_seq
                )
                if rows and not self._stopping:
                    self._last_seq = rows[-1][0]
                    task = asyncio.create_task(
                        self._batch(service, store, outputs, [title for _, title in rows])
                    )
                    self._inflight.add(task)
                    task.add_done_callback(self._task_done)
                    continue
                if self._enumerated and not self._inflight:
                    return
            await self._wake.wait()

    async def _enumerate(self, api: enumerate_.MediaWikiApi) -> None:
        config = self.config
        try:
            cursor = await asyncio.to_thread(lambda: self._log.cursor)
            async for titles, after, done in config.source.pages(api, cursor, config.page_size):
                kept = [title for title in titles if in_shard(title, config.shard)]
                new = await asyncio.to_thread(self._log.save_page, kept, after, done=done)
                if new:
                    self._progress.total += new
                    self._progress.refresh()
                self._wake.set()
            self._enumerated = True
        except Exception as exc:
            self._report(exc, "enumeration failed: ")
        finally:
            self._wake.set()

    async def _batch(
        self, service: ScoringService, store: ScoreStore, outputs: Outputs, titles: list[str]
    ) -> None:
        outcomes = await service.score(titles)
        # Recording is never cancelled (asyncio.wait leaves it running when this batch is),
        # so the store, the job log and the outputs agree; it reports its own failure.
        recording = asyncio.create_task(self._record(store, outputs, outcomes))
        self._recording.add(recording)
        recording.add_done_callback(self._task_done)
        await asyncio.wait({recording})

    async def _record(self, store: ScoreStore, outputs: Outputs, outcomes: list[Outcome]) -> None:
        model, policy = self.config.model, self.config.policy

        def write() -> None:
            store.put(records(outcomes, model, cached=False, policy=policy))
            # Scores the service already had: kept as first stored, with this title added.
            store.put(records(outcomes, model, cached=True, policy=policy), replace=False)
            self._log.finish(
                done=[(o.title, o.sha1) for o in outcomes if o.ok],
                errors=[(o.title, o.code or "", o.message or "") for o in outcomes if not o.ok],
            )
            outputs.write([row(outcome, model) for outcome in outcomes])

        await asyncio.to_thread(write)
        self._finished.update("done" if o.ok else (o.code or "") for o in outcomes)
        self._progress.update(len(outcomes))

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._recording.discard(task)
        if not task.cancelled() and (exc := task.exception()):
            self._report(exc)
        self._wake.set()

    def _report(self, exc: BaseException, context: str = "") -> None:
        if not isinstance(exc, _EXPECTED):
            log.error("unexpected failure", exc_info=exc)
        self._fail(f"{context}{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        """Stop taking batches: something no retry fixed. Pending titles stay pending."""
        if self.failure is None:
            self.failure = message
            tqdm.write(f"stopping: {message}", file=sys.stderr)
        self._stopping = True
        self._wake.set()

    def _interrupt(self) -> None:
        self.interrupts += 1
        self._stopping = True
        self._wake.set()
        if self.interrupts == 1:
            tqdm.write(
                f"stopping: letting {len(self._inflight)} batches in flight finish "
                "(interrupt again to cancel them; their titles stay pending)",
                file=sys.stderr,
            )
        else:
            for task in self._inflight:
                task.cancel()

    def _status(self) -> int:
        if self.interrupts:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failure else 0

    async def _summary(self, elapsed: float) -> dict[str, Any]:
        counts = await asyncio.to_thread(self._log.counts)
        errors = await asyncio.to_thread(self._log.errors)
        finished = sum(self._finished.values())
        return {
            "job": self.config.job,
            "model": self.config.model,
            "done": counts["done"],
            "errors": counts["error"],
            "errors_by_code": dict(Counter(code for _, code, _ in errors).most_common()),
            "pending": counts["pending"],
            "enumerated": self._enumerated,
            "interrupted": bool(self.interrupts),
            "failure": self.failure,
            "this_run": {
                "done": self._finished["done"],
                "errors": finished - self._finished["done"],
                "requests": self.requests,
                "elapsed_s": round(elapsed, 2),
                "titles_per_s": round(finished / elapsed, 2) if elapsed > 0 else 0.0,
            },
        }


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def backfill(
    titles: Path | None = typer.Option(
        None, "--titles", exists=True, dir_okay=False, help="File of titles, one a line."
    ),
    category: str | None = typer.Option(None, help="Category whose files to score."),
    depth: int = typer.Option(0, min=0, help="Levels of subcategories to walk too."),
    uploads_from: str | None = typer.Option(None, help="Files uploaded from (ISO 8601)..."),
    uploads_to: str | None = typer.Option(None, help="...to (ISO 8601, inclusive)."),
    model: Model = typer.Option(..., help="Model to score with."),
    service: str = typer.Option("http://127.0.0.1:8080", help="The scoring service."),
    commons_api: str = typer.Option(
        "https://commons.wikimedia.org/w/api.php", envvar="COMMONS_API_URL"
    ),
    database_url: str = typer.Option(DEFAULT_DATABASE_URL, envvar="DATABASE_URL"),
    job: str | None = typer.Option(
        None, help="Job name (default: from the input, model and shard)."
    ),
    concurrency: int = typer.Option(4, min=1, help="Requests in flight."),
    batch: int = typer.Option(MAX_TITLES, min=1, max=MAX_TITLES, help="Titles per request."),
    shard: str = typer.Option("0/1", help="i/n: only titles whose hash mod n is i."),
    jsonl: Path | None = typer.Option(None, help="Append a JSON line per finished title."),
    csv: Path | None = typer.Option(None, help="Append a CSV row per finished title."),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Score titles with retryable errors again."
    ),
    user_agent: str = typer.Option(USER_AGENT, help="User-Agent for Commons and the service."),
    summary_json: Path | None = typer.Option(None, help="Write the summary here too."),
    page_size: int = typer.Option(
        enumerate_.PAGE_SIZE, min=1, max=enumerate_.PAGE_SIZE, hidden=True
    ),
    policy: Path | None = typer.Option(
        None, envvar="MODERATION_POLICY", help="Moderation policy file (default: the packaged one)."
    ),
) -> None:
    """Score every file of a title list, a category tree or a range of uploads into the
    score store; the same command again resumes where it stopped."""
    inputs = [titles is not None, category is not None, bool(uploads_from or uploads_to)]
    if sum(inputs) != 1:
        _usage("give exactly one of --titles, --category, --uploads-from/--uploads-to")
    if (uploads_from is None) != (uploads_to is None):
        _usage("--uploads-from and --uploads-to go together")
    source = Source(
        titles_file=titles,
        category=category,
        depth=depth,
        uploads=(_iso(uploads_from), _iso(uploads_to)) if uploads_from and uploads_to else None,
    )
    parsed_shard = _shard(shard)
    try:
        moderation = load_policy(policy)
    except ValueError as exc:
        _usage(str(exc))
    config = Config(
        source=source,
        model=model.value,
        job=job or job_name(source, model.value, parsed_shard),
        service_url=service,
        commons_api=commons_api,
        database_url=database_url,
        concurrency=concurrency,
        batch=batch,
        shard=parsed_shard,
        jsonl=jsonl,
        csv=csv,
        retry_errors=retry_errors,
        user_agent=user_agent,
        page_size=page_size,
        policy=moderation,
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with logging_redirect_tqdm():
        try:
            summary, status = asyncio.run(Backfill(config).run())
        except JobConflict as exc:
            _usage(f"{exc}; give another --job")
        except StoreError as exc:
            typer.echo(f"commons-backfill: {exc}", err=True)
            raise typer.Exit(EXIT_FAILED) from exc
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    typer.echo(_describe(summary), err=True)
    raise typer.Exit(status)


def _describe(summary: dict[str, Any]) -> str:
    run = summary["this_run"]
    lines = [
        f"job {summary['job']}",
        f"  done {summary['done']}, errors {summary['errors']}, pending {summary['pending']}"
        + ("" if summary["enumerated"] else " (enumeration not finished)"),
        f"  this run: {run['done']} done, {run['errors']} errors, {run['requests']} requests "
        f"in {run['elapsed_s']} s ({run['titles_per_s']} titles/s)",
    ]
    lines += [f"  error {code}: {n}" for code, n in summary["errors_by_code"].items()]
    if summary["failure"]:
        lines.append(f"  stopped: {summary['failure']}")
    elif summary["interrupted"]:
        lines.append("  interrupted: run the same command to resume")
    return "\n".join(lines)


def _iso(value: str) -> str:
    """An ISO 8601 time as MediaWiki takes it, in UTC; naive times are UTC."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        _usage(f"{value!r} is not an ISO 8601 time")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shard(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        _usage(f"--shard takes i/n with 0 <= i < n, not {value!r}")
    return int(index), int(count)


def _usage(message: str) -> NoReturn:
    typer.echo(f"commons-backfill: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


if __name__ == "__main__":
    app()
