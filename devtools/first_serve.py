"""Time the first ``make serve`` of fresh clones, one revision after another, side by side.

    python -m devtools.first_serve c8d5bce HEAD

Each revision is cloned from this repository into an empty folder and ``make serve`` runs
there from nothing (virtualenv, models, repository) until it prints ``[serve] ready``; then
the stack is stopped and the clone removed. Prints the seconds to ready and each revision's
ratio to the first's. The revisions run one at a time, since each uses both cores. All use
pip's download cache: run it twice and take the second run, whose cache every revision has
filled, so that none pays for downloads the others did not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
READY = "[serve] ready"


def first_serve(revision: str, timeout_s: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="first-serve-"))
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
        subprocess.run(["git", "checkout", "--quiet", revision], cwd=folder, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, check=True,
                                capture_output=True, text=True).stdout.strip()
        log = folder.parent / f"{folder.name}.log"
        started = time.monotonic()
        with log.open("w") as out:
            # Its own process group, so the stack and everything make started stop together.
            serve = subprocess.Popen(["make", "serve"], cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            while READY not in log.read_text(errors="replace"):
                if serve.poll() is not None:
                    raise RuntimeError(f"{revision}: make serve exited {serve.returncode}; see {log}")
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"{revision}: not ready after {timeout_s:.0f} s; see {log}")
                time.sleep(0.5)
            seconds = time.monotonic() - started
        finally:
            with contextlib.suppress(ProcessLookupError):  # make may have exited already
                os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
        log.unlink()
        return {"revision": revision, "commit": commit, "seconds_to_ready": round(seconds, 1)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(
    revisions: list[str] = typer.Argument(..., help="Revisions to time, the first being the reference."),
    timeout_s: float = typer.Option(1800, help="Give up on a revision after this long."),
) -> None:
    results = [first_serve(revision, timeout_s) for revision in revisions]
    for result in results:
        result["ratio_to_first"] = round(result["seconds_to_ready"] / results[0]["seconds_to_ready"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    typer.run(main)
