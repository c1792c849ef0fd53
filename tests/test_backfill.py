"""`commons-backfill` over real HTTP: titles enumerated from `FakeCommons` (MediaWiki's own
format), scored by a stand-in of our predict API that answers as the transformer does
(per-item errors, 400/502 when every item failed, 503 with Retry-After), recorded in a
SQLite score store. The interruption tests run the command as a process and send it SIGINT.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bulk.backfill import app, in_shard
from bulk.service import Outcome, ScoringService, ServiceError, ServiceUnavailable, records
from devtools.fake_commons import FakeCommons, image_bytes
from devtools.local_server import LocalServer
from moderation.policy import load_policy
from store import Key, open_store
from transformer.errors import STATUS_BY_CODE

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"logo-detection": ("logo", "out_of_domain"), "nsfw-detection": ("nsfw", "sfw")}


class ScoringStandIn(LocalServer):
    """``POST /v1/models/<model>:predict`` for instances by file name, as the transformer
    answers it. Every title is a file whose SHA-1 is the title's, scored from that hash,
    except those given an error code in ``item_errors``. `fail` queues whole-request
    failures; ``delay_s`` slows every answer; ``scored`` lists each title scored, in order."""

    def __init__(self, *, delay_s: float = 0.0, version: str = "3") -> None:
        self.delay_s = delay_s
        self.version = version
        self.item_errors: dict[str, str] = {}
        self.scored: list[str] = []
        self.requests = 0
        self._failures: list[tuple[int, int | None]] = []
        self._lock = threading.Lock()
        super().__init__(_PredictHandler)

    def fail(self, times: int, status: int = 503, retry_after: int | None = None) -> None:
        with self._lock:
            self._failures += [(status, retry_after)] * times

    def answer(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        time.sleep(self.delay_s)
        with self._lock:
            self.requests += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return status, headers, {"error": "Triton is unavailable"}
        if model not in TARGETS:
            return 404, {}, {"error": f"model {model} does not exist"}
        target, _ = TARGETS[model]
        predictions = []
        for instance in body["instances"]:
            title = instance["filename"]
            if code := self.item_errors.get(title):
                error = {"code": code, "message": f"{code} for {title}"}
                predictions.append({"filename": title, "error": error})
                continue
            sha1 = hashlib.sha1(title.encode()).hexdigest()
            p = int(sha1[:8], 16) / 2**32
            predictions.append(
                {"filename": title, "target": target, "prediction": p, "out_of_domain": 1 - p,
                 "sha1": sha1, "cached": False}
            )  # fmt: skip
        with self._lock:
            self.scored += [p["filename"] for p in predictions if "sha1" in p]
        failed = [STATUS_BY_CODE[p["error"]["code"]] for p in predictions if "error" in p]
        status = 200
        if len(failed) == len(predictions):
            status = 400 if max(failed) < 500 else 502
        return status, {"x-model-version": self.version}, {"predictions": predictions}


class _PredictHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = self.path.removeprefix("/v1/models/").removesuffix(":predict")
        status, headers, answer = self.server.fake.answer(model, body)  # type: ignore[attr-defined]
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # a cancelled request
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[ScoringStandIn]:
    with ScoringStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def commons() -> Iterator[FakeCommons]:
    with FakeCommons({}) as fake:
        yield fake


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'scores.sqlite3'}"


def backfill(*args: str | Path, service: ScoringStandIn, commons: FakeCommons, database: str,
             model: str = "logo-detection") -> tuple[int, str]:  # fmt: skip
    """Run the command in this process; its exit status and its output."""
    argv = [
        "--model", model, "--service", service.base_url, "--commons-api", commons.api_url,
        "--database-url", database, *map(str, args),
    ]  # fmt: skip
    result = CliRunner().invoke(app, argv, catch_exceptions=False)
    return result.exit_code, result.output


def job_titles(database: str, job: str | None = None) -> dict[str, Counter[str]]:
    """Every job's titles by state, straight from the job log's table."""
    store = open_store(database)
    try:
        with store.transaction(write=False) as conn:
            rows = conn.exec_driver_sql("SELECT job, title, state FROM backfill_items").all()
    finally:
        store.dispose()
    jobs: dict[str, Counter[str]] = {}
    for name, title, state in rows:
        if job is None or name == job:
            jobs.setdefault(name, Counter())[f"{state}:{title}"] += 1
    return jobs


def states(database: str) -> dict[str, str]:
    """title → state, for a database holding one job; fails on a title listed twice."""
    (counter,) = job_titles(database).values()
    assert max(counter.values()) == 1
    return {key.split(":", 1)[1]: key.split(":", 1)[0] for key in counter}


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_the_client_reports_item_errors_retries_outages_and_refuses_misuse(
    service: ScoringStandIn,
) -> None:
    client = ScoringService(service.base_url, "logo-detection", retries=2, backoff_s=0.01)
    async with client:
        service.item_errors = {"File:A.jpg": "file_not_found", "File:B.jpg": "invalid_title"}
        outcomes = await client.score(["File:A.jpg", "File:B.jpg"])  # a 400 listing each
        assert [(o.code, o.ok) for o in outcomes] == [
            ("file_not_found", False),
            ("invalid_title", False),
        ]
        assert client.requests == 1

        # Every item failing upstream is a 502: retried, then each item's error.
        service.item_errors = {"File:A.jpg": "commons_unavailable"}
        (outcome,) = await client.score(["File:A.jpg"])
        assert outcome.code == "commons_unavailable" and client.requests == 4

        service.fail(1, 500)
        outcomes = await client.score(["File:C.jpg", "File:D.jpg"])
        assert {o.code for o in outcomes} == {"internal_error"} and client.requests == 5

        service.fail(3, 503)
        with pytest.raises(ServiceUnavailable):
            await client.score(["File:C.jpg"])
        with pytest.raises(ValueError):
            await client.score([f"File:{i}.jpg" for i in range(51)])
    async with ScoringService(service.base_url, "no-such-model", retries=0) as unknown:
        with pytest.raises(ServiceError):
            await unknown.score(["File:C.jpg"])
    async with ScoringService("http://127.0.0.1:9", "logo-detection", retries=1) as nowhere:
        with pytest.raises(ServiceUnavailable):
            await nowhere.score(["File:C.jpg"])


def test_records_merge_titles_of_one_file_and_skip_what_has_no_scores() -> None:
    sha1, other = "a" * 40, "b" * 40
    scores = {"logo": 0.9, "out_of_domain": 0.1}
    outcomes = [
        Outcome("File:One.jpg", sha1, scores, None, None, "3"),
        Outcome("File:Same file.jpg", sha1, scores, None, None, "3"),
        Outcome("File:Stored.jpg", other, scores, None, None, "3", cached=True),
        Outcome("File:No sha1.jpg", None, scores, None, None, "3"),
        Outcome("File:No version.jpg", "c" * 40, scores, None, None, ""),
        Outcome("File:Gone.jpg", None, None, "file_not_found", "gone", "3"),
    ]
    policy = load_policy()
    (record,) = records(outcomes, "logo-detection", cached=False, policy=policy)
    assert record.key == Key(sha1, "logo-detection", "3") and record.scores == scores
    assert record.titles == ("File:One.jpg", "File:Same file.jpg")
    assert (record.state, record.policy_version) == ("needs_review", policy.version)
    (known,) = records(outcomes, "logo-detection", cached=True, policy=policy)
    assert known.key.sha1 == other and known.titles == ("File:Stored.jpg",)


def test_titles_file_scores_every_title_once_into_store_and_outputs(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    listing = tmp_path / "titles.txt"
    listing.write_text(
        "# files to score\nFile:Alpha.jpg\n\nbeta_logo.png\n  Image:Gamma one.svg  \n"
        "File:Alpha.jpg\nMissing.jpg\n"
    )
    service.item_errors["File:Missing.jpg"] = "file_not_found"
    out, table, summary = tmp_path / "out.jsonl", tmp_path / "out.csv", tmp_path / "sum.json"
    status, output = backfill(
        "--titles", listing, "--jsonl", out, "--csv", table, "--summary-json", summary,
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    expected = ["File:Alpha.jpg", "File:Beta logo.png", "File:Gamma one.svg", "File:Missing.jpg"]
    assert sorted(service.scored) == expected[:3]
    assert states(database) == dict.fromkeys(expected[:3], "done") | {expected[3]: "error"}

    rows = {row["title"]: row for row in jsonl(out)}
    assert sorted(rows) == expected and len(jsonl(out)) == 4
    alpha_sha1 = hashlib.sha1(b"File:Alpha.jpg").hexdigest()
    alpha = rows["File:Alpha.jpg"]
    assert alpha["status"] == "done" and alpha["sha1"] == alpha_sha1
    assert alpha["model"] == "logo-detection" and alpha["version"] == "3"
    assert list(alpha["scores"]) == ["logo", "out_of_domain"]
    assert alpha["scores"]["logo"] + alpha["scores"]["out_of_domain"] == pytest.approx(1)
    assert rows["File:Missing.jpg"]["error"]["code"] == "file_not_found"
    with open(table, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["title"] for r in records] == [r["title"] for r in jsonl(out)]
    assert records[0]["label"] == "logo" and float(records[0]["score"]) == alpha["scores"]["logo"]

    store = open_store(database)
    try:
        stored = store.get([Key(alpha_sha1, "logo-detection", "3")])
    finally:
        store.dispose()
    (record,) = stored.values()
    assert record.scores == alpha["scores"] and record.titles == ("File:Alpha.jpg",)
    # Decided by the packaged policy, as the service's own writes are.
    assert record.policy_version == load_policy().version and record.state in ("needs_review", "ok")

    report = json.loads(summary.read_text())
    assert report["done"] == 3 and report["errors"] == 1 and report["pending"] == 0
    assert report["errors_by_code"] == {"file_not_found": 1}
    assert report["this_run"]["requests"] == 1


def test_nsfw_scores_are_labelled_nsfw_and_sfw(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    listing = tmp_path / "titles.txt"
    listing.write_text("Photo.jpg\n")
    out = tmp_path / "out.jsonl"
    status, output = backfill(
        "--titles", listing, "--jsonl", out, model="nsfw-detection",
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    assert list(jsonl(out)[0]["scores"]) == ["nsfw", "sfw"]


def test_category_walks_subcategories_to_the_depth_asked_each_file_once(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    image = image_bytes(8, 8)
    commons.add_category("Sub", parents=["Top"])
    commons.add_category("Deeper", parents=["Sub"])
    commons.add_category("Top", parents=["Deeper"])  # a loop
    for name, categories in {
        "A.jpg": ["Top"], "B.jpg": ["Top", "Sub"], "C.jpg": ["Sub"], "D.jpg": ["Deeper"],
        "E.jpg": ["Elsewhere"],
    }.items():  # fmt: skip
        commons.add_file(name, image, categories=categories)
    shallow = tmp_path / "shallow.jsonl"
    status, output = backfill(
        "--category", "Top", "--depth", "1", "--page-size", "1", "--jsonl", shallow,
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    shallow_titles = sorted(row["title"] for row in jsonl(shallow))
    assert shallow_titles == ["File:A.jpg", "File:B.jpg", "File:C.jpg"]

    deep = tmp_path / "deep.jsonl"
    status, output = backfill(
        "--category", "Category:Top", "--depth", "5", "--page-size", "2", "--jsonl", deep,
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    titles = [row["title"] for row in jsonl(deep)]
    assert sorted(titles) == ["File:A.jpg", "File:B.jpg", "File:C.jpg", "File:D.jpg"]
    asked = [r.params for r in commons.api_requests if r.params.get("list") == "categorymembers"]
    # Each category listed once per job (the loop back to Top is not followed).
    listed = Counter(p["cmtitle"] for p in asked if "cmcontinue" not in p)
    assert listed == {"Category:Top": 2, "Category:Sub": 2, "Category:Deeper": 1}
    assert all(p["maxlag"] == "5" for p in asked)
    assert len(job_titles(database)) == 2


def test_uploads_in_a_time_range_across_continued_pages(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    uploaded = commons.add_many(30, first_upload="2026-11-01T00:00:00Z", interval_s=60)
    out = tmp_path / "out.jsonl"
    status, output = backfill(
        "--uploads-from", "2026-11-01T00:05:00Z", "--uploads-to", "2026-11-01T00:24:00+00:00",
        "--page-size", "7", "--jsonl", out, "--user-agent", "backfill-tests/1.0 (x@example.org)",
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    assert sorted(row["title"] for row in jsonl(out)) == uploaded[5:25]
    asked = [r for r in commons.api_requests if r.params.get("list") == "allimages"]
    assert len(asked) == 3  # 20 titles, 7 a page
    assert all(r.headers["user-agent"] == "backfill-tests/1.0 (x@example.org)" for r in asked)
    assert [r.params.get("aicontinue") for r in asked][1:] == [
        "20261101001200|Bulk_000013.png", "20261101001900|Bulk_000020.jpg",
    ]  # fmt: skip
    assert all(r.params.get("continue") == "-||" for r in asked[1:])


def test_shards_partition_the_titles_exactly(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    titles = [f"File:Shard test {i}.jpg" for i in range(200)]
    listing = tmp_path / "titles.txt"
    listing.write_text("\n".join(titles))
    found: list[str] = []
    for index in range(3):
        out = tmp_path / f"shard{index}.jsonl"
        status, output = backfill(
            "--titles", listing, "--shard", f"{index}/3", "--jsonl", out,
            service=service, commons=commons, database=database,
        )  # fmt: skip
        assert status == 0, output
        shard = [row["title"] for row in jsonl(out)]
        assert all(in_shard(title, (index, 3)) for title in shard)
        assert 40 < len(shard) < 95
        found += shard
    assert sorted(found) == sorted(titles)
    assert len(job_titles(database)) == 3


def test_item_errors_keep_their_codes_and_retry_errors_rescores_retryable_ones(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    listing = tmp_path / "titles.txt"
    listing.write_text("Fine.jpg\nGone.jpg\nSlow.jpg\nBusy.jpg\n")
    service.item_errors = {
        "File:Gone.jpg": "file_not_found",
        "File:Slow.jpg": "deadline_exceeded",
        "File:Busy.jpg": "commons_unavailable",
    }
    out = tmp_path / "out.jsonl"
    args = ("--titles", listing, "--jsonl", out)
    status, output = backfill(*args, service=service, commons=commons, database=database)
    assert status == 0, output
    assert "error deadline_exceeded: 1" in output and "error file_not_found: 1" in output
    assert states(database) == {
        "File:Fine.jpg": "done", "File:Gone.jpg": "error", "File:Slow.jpg": "error",
        "File:Busy.jpg": "error",
    }  # fmt: skip

    status, output = backfill(*args, service=service, commons=commons, database=database)
    assert status == 0 and service.requests == 1  # nothing pending: nothing asked

    service.item_errors = {"File:Gone.jpg": "file_not_found"}
    status, output = backfill(
        *args, "--retry-errors", service=service, commons=commons, database=database
    )
    assert status == 0, output
    assert sorted(service.scored) == ["File:Busy.jpg", "File:Fine.jpg", "File:Slow.jpg"]
    assert states(database)["File:Slow.jpg"] == "done"
    assert states(database)["File:Gone.jpg"] == "error"
    rows = jsonl(out)
    assert [(r["title"], r["status"]) for r in rows[4:]] == [
        ("File:Slow.jpg", "done"), ("File:Busy.jpg", "done"),
    ]  # fmt: skip


def test_whole_request_503_is_retried_after_retry_after(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    listing = tmp_path / "titles.txt"
    listing.write_text("One.jpg\nTwo.jpg\n")
    service.fail(2, 503, retry_after=1)
    started = time.monotonic()
    summary = tmp_path / "sum.json"
    status, output = backfill(
        "--titles", listing, "--summary-json", summary,
        service=service, commons=commons, database=database,
    )  # fmt: skip
    assert status == 0, output
    assert time.monotonic() - started >= 2
    assert service.requests == 3
    report = json.loads(summary.read_text())
    assert report["done"] == 2 and report["this_run"]["requests"] == 3


def test_a_taken_job_name_or_two_inputs_are_usage_errors(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    listing = tmp_path / "titles.txt"
    listing.write_text("One.jpg\n")
    run = {"service": service, "commons": commons, "database": database}
    assert backfill("--titles", listing, "--job", "mine", **run)[0] == 0
    status, output = backfill("--category", "X", "--job", "mine", **run)
    assert status == 2 and "exists with spec" in output
    status, output = backfill("--category", "X", "--titles", listing, **run)
    assert status == 2 and "exactly one of" in output
    status, output = backfill("--titles", listing, "--shard", "3/3", **run)
    assert status == 2 and "--shard" in output


def start_backfill(*args: str | Path, service: ScoringStandIn, commons: FakeCommons,
                   database: str) -> subprocess.Popen[str]:  # fmt: skip
    command = [
        sys.executable, "-m", "bulk.backfill", "--model", "logo-detection",
        "--service", service.base_url, "--commons-api", commons.api_url, "--database-url", database,
        *map(str, args),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_interrupted_during_enumeration_and_scoring_resumes_without_loss_or_duplicates(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    titles = commons.add_many(400, categories=["Big"])
    commons.api_delay = 0.2  # 20 pages: enumeration outlasts the interruption
    service.delay_s = 0.05
    out, summary = tmp_path / "out.jsonl", tmp_path / "sum.json"
    args = (
        "--category", "Big", "--page-size", "20", "--batch", "10", "--concurrency", "3",
        "--jsonl", out, "--csv", tmp_path / "out.csv", "--summary-json", summary,
    )  # fmt: skip
    run = {"service": service, "commons": commons, "database": database}
    process = start_backfill(*args, **run)
    wait_for(lambda: len(service.scored) >= 60)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    first = json.loads(summary.read_text())
    assert first["interrupted"] and not first["enumerated"] and first["done"] < len(titles)
    # In-flight batches were let finish and recorded: what was scored is what is done.
    assert first["done"] == len(service.scored) == len(jsonl(out))

    process = start_backfill(*args, **run)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert states(database) == dict.fromkeys(titles, "done")
    assert sorted(service.scored) == sorted(titles)  # no title scored twice
    rows = [row["title"] for row in jsonl(out)]
    assert sorted(rows) == sorted(titles)
    with open(tmp_path / "out.csv", newline="") as handle:
        assert sorted(r["title"] for r in csv.DictReader(handle)) == sorted(titles)
    # Enumeration resumed from its cursor: only a page the interruption cut short, whose
    # titles and cursor were not saved, is listed again.
    pages = [
        r.params.get("cmcontinue") for r in commons.api_requests
        if r.params.get("list") == "categorymembers"
    ]  # fmt: skip
    assert len(set(pages)) == 20 and len(pages) <= 21


def test_a_second_interrupt_cancels_batches_in_flight_and_leaves_them_pending(
    tmp_path: Path, service: ScoringStandIn, commons: FakeCommons, database: str
) -> None:
    titles = [f"File:Slow {i}.jpg" for i in range(40)]
    listing = tmp_path / "titles.txt"
    listing.write_text("\n".join(titles))
    out = tmp_path / "out.jsonl"
    args = ("--titles", listing, "--batch", "5", "--concurrency", "2", "--jsonl", out)
    run = {"service": service, "commons": commons, "database": database}
    service.delay_s = 0.3
    process = start_backfill(*args, **run)
    wait_for(lambda: len(service.scored) >= 10)
    service.delay_s = 20
    time.sleep(0.5)  # the next batches are now stuck in the service
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    assert time.monotonic() - started < 10
    done = [row["title"] for row in jsonl(out)]
    assert states(database) == dict.fromkeys(done, "done") | {
        title: "pending" for title in titles if title not in done
    }

    service.delay_s = 0
    process = start_backfill(*args, **run)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    rows = [row["title"] for row in jsonl(out)]
    assert sorted(rows) == sorted(titles) and len(rows) == len(set(rows))
    assert states(database) == dict.fromkeys(titles, "done")


def test_the_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("commons-backfill")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert result.returncode == 0 and "--uploads-from" in result.stdout
