"""``commons-moderation``: reviewers' verdicts, re-deciding stored results under a new
policy, the quality report, reviewer tokens, and migrating the score store."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
import yaml

from moderation.policy import Policy, load_policy
from moderation.quality import BOOTSTRAP_RESAMPLES, MIN_PER_CLASS, TARGET_PRECISION, write_report
from moderation.reviewers import Reviewers, hash_token, new_token
from store import ScoreStore, StoreError, open_store
from store.review import QUEUE, SAMPLES, VERDICTS, Verdict, add_verdict, apply_policy
from store.scores import DEFAULT_DATABASE_URL

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Reviewers' verdicts, re-deciding stored results, the quality report, tokens, "
    "migrating the store.",
)

DatabaseUrl = typer.Option(
    DEFAULT_DATABASE_URL,
    "--database-url",
    envvar="DATABASE_URL",
    show_envvar=True,
    help="The score store (sqlite:///… or postgresql+psycopg://…).",
)
PolicyFile = typer.Option(
    None,
    "--policy",
    envvar="MODERATION_POLICY",
    show_envvar=True,
    help="Policy file; default: the packaged moderation/policy.yaml.",
)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _policy(path: Path | None) -> Policy:
    try:
        return load_policy(path)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def _open(url: str) -> ScoreStore:
    try:
        return open_store(url)
    except StoreError as exc:
        raise fail(str(exc)) from None


def _read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise fail(f"token file {token_file}: {exc.strerror or exc}", 2) from None
    return os.environ.get("REVIEW_TOKEN", "").strip()


@app.command()
def verdict(
    sha1: str = typer.Option(..., help="The file's SHA-1 (40 lowercase hex digits)."),
    model: str = typer.Option(..., help="The model the verdict is about, e.g. nsfw-detection."),
    verdict: str = typer.Option(
        ..., help="confirmed: the file is what the model looks for; rejected: it is not."
    ),
    note: str | None = typer.Option(None, help="Why, for the next reviewer."),
    sample: str = typer.Option(
        QUEUE,
        help="Where the file came from: queue (the flagged queue) or audit (the next file "
        "of the audit sample, taken in its order: only then do its verdicts measure recall "
        "and calibration).",
    ),
    token_file: Path | None = typer.Option(
        None, help="File holding your reviewer token; else the REVIEW_TOKEN variable."
    ),
    reviewers_file: Path | None = typer.Option(
        None,
        "--reviewers",
        envvar="REVIEWERS_FILE",
        show_envvar=True,
        help="Reviewer names and token hashes (YAML).",
    ),
    database_url: str = DatabaseUrl,
) -> None:
    """Record a verdict on a file, as the reviewer whose token is given."""
    if verdict not in VERDICTS:
        raise fail(f"--verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}", 2)
    if sample not in SAMPLES:
        raise fail(f"--sample must be one of {', '.join(SAMPLES)}, not {sample!r}", 2)
    token = _read_token(token_file)
    if not token:
        raise fail("no reviewer token: pass --token-file or set REVIEW_TOKEN", 2)
    if reviewers_file is None:
        raise fail("no reviewers file: pass --reviewers or set REVIEWERS_FILE", 2)
    try:
        reviewer = Reviewers.load(reviewers_file).identify(token)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if reviewer is None:
        raise fail(f"the token is not a reviewer's in {reviewers_file}")
    try:
        given = Verdict(
            sha1, model, verdict, reviewer, datetime.now(UTC), note or None, sample=sample
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    store = _open(database_url)
    try:
        add_verdict(store, given)
    except (ValueError, StoreError) as exc:
        raise fail(str(exc)) from None
    finally:
        store.dispose()
    typer.echo(f"{reviewer}: {verdict} {model} {sha1} ({sample})")


@app.command()
def migrate(database_url: str = DatabaseUrl) -> None:
    """Bring the score store's schema to the newest migration (the review page does not:
    it runs without the rights to change the schema)."""
    store = _open(database_url)
    store.dispose()
    typer.echo("the score store's schema is up to date")


@app.command("apply-policy")
def apply_policy_command(
    policy_file: Path | None = PolicyFile, database_url: str = DatabaseUrl
) -> None:
    """Re-decide stored results that another policy version (or none) decided."""
    policy = _policy(policy_file)
    store = _open(database_url)
    try:
        changed = apply_policy(store, policy)
    except StoreError as exc:
        raise fail(str(exc)) from None
    finally:
        store.dispose()
    typer.echo(f"policy {policy.version}: {changed} stored results re-decided")


@app.command()
def report(
    out: Path = typer.Option(Path("build/quality-report"), help="Output directory."),
    model: str | None = typer.Option(None, help="Only this model."),
    target_precision: float = typer.Option(TARGET_PRECISION, min=0.5, max=0.999),
    min_per_class: int = typer.Option(
        MIN_PER_CLASS, min=1, help="Confirmed and rejected verdicts each needed to conclude."
    ),
    resamples: int = typer.Option(BOOTSTRAP_RESAMPLES, min=100, help="Bootstrap resamples."),
    policy_file: Path | None = PolicyFile,
    database_url: str = DatabaseUrl,
) -> None:
    """Precision, recall and F1 at the policy's thresholds, from reviewers' verdicts (the
    audit sample's, and precision among reviewed flagged files): report.md, report.json and
    PNG figures in --out."""
    policy = _policy(policy_file)
    store = _open(database_url)
    try:
        written = write_report(
            store,
            policy,
            out,
            model=model,
            target=target_precision,
            min_per_class=min_per_class,
            resamples=resamples,
        )
    except StoreError as exc:
        raise fail(str(exc)) from None
    finally:
        store.dispose()
    for result in written["models"]:
        audit = result["audit"]
        state = "conclusive" if result["conclusive"] else "too few verdicts to conclude"
        typer.echo(
            f"{result['model']} {result['model_version']}: {result['verdicts']} verdicts "
            f"({result['confirmed']} confirmed, {result['rejected']} rejected), "
            f"{audit['verdicts']} in the audit sample ({audit['confirmed']} confirmed, "
            f"{audit['rejected']} rejected): {state}"
        )
    typer.echo(f"written to {out / 'report.md'}")


@app.command("hash-token")
def hash_token_command(
    token_file: Path | None = typer.Option(
        None, help="File holding the token; else read from standard input."
    ),
) -> None:
    """Print the SHA-256 of a token, for the reviewers file (the token is never an argument:
    it would land in the shell's history)."""
    token = _read_token(token_file) if token_file is not None else sys.stdin.readline().strip()
    try:
        typer.echo(hash_token(token))
    except ValueError as exc:
        raise fail(str(exc), 2) from None


@app.command("new-token")
def new_token_command(name: str = typer.Argument(..., help="The reviewer's name.")) -> None:
    """Make a token for a reviewer: the token (give it to them, once) on standard error, the
    reviewers-file line on standard output."""
    token = new_token()
    entry = {name: hash_token(token)}
    try:
        Reviewers(entry)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(token, err=True)
    typer.echo(yaml.safe_dump(entry, allow_unicode=True).strip())
