"""The review page (`review/`), as a real server (`python -m review`) on a live store: in
headless Chromium from Debian's packages (keyboard review of the flagged queue and the audit
sample, paging, verdicts reaching the store and the quality report), and over plain HTTP for
what a browser hides (login before anything, sessions ending, CSRF, the bearer API, filters,
paging bounds). The HTTP tests run on SQLite and PostgreSQL. Every test migrates its store
itself: the page does not."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import itsdangerous
import pytest
import sqlalchemy
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from devtools.browser import BrowserMissing, chromium
from devtools.review_demo import (
    FakeFilePath,
    ReviewServer,
    review_env,
    reviewers_yaml,
    seed,
)
from moderation.policy import load_policy
from store import Key, Record, ScoreStore, open_store
from store.review import (
    QueueItem,
    Verdict,
    add_verdict,
    review_queue,
    session_generation,
    verdicts,
)
from tests.postgres import fresh_database

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "build" / "test-reports"
TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}
PAGE = 10
SEEDED = 40
# A stored title no real Commons file has, to show it is escaped everywhere it is shown.
HOSTILE_TITLE = 'File:Logo "quoted" <script>alert(1)</script> & more.png'
HOSTILE_SHA1 = hashlib.sha1(b"hostile").hexdigest()
# A result whose scores the policy cannot read (a model version that renamed its label).
UNDECIDED_SHA1 = hashlib.sha1(b"renamed label").hexdigest()
MODELS = tuple(sorted(load_policy().models))
WAIT_S = 20


def env(database_url: str, reviewers_file: Path, commons_url: str) -> dict[str, str]:
    return review_env(
        database_url, reviewers_file, commons_url, extra=[("REVIEW_PAGE_SIZE", str(PAGE))]
    )


def seeded_store(url: str) -> ScoreStore:
    """A store at the newest schema (the page does not migrate), seeded."""
    store = open_store(url)
    policy = load_policy()
    seed(store, policy, SEEDED)
    store.put(
        [
            policy.stamp(
                Record(
                    Key(UNDECIDED_SHA1, "nsfw-detection", "3"),
                    {"porn": 0.9, "neutral": 0.1},
                    titles=("File:Renamed label.jpg",),
                )
            )
        ]
    )
    scores = {"logo": 0.99, "out_of_domain": 0.01}
    decision = policy.decide("logo-detection", scores)
    store.put(
        [
            Record(
                Key(HOSTILE_SHA1, "logo-detection", "2"),
                scores,
                titles=(HOSTILE_TITLE,),
                state=decision.state,
                reason=decision.reason,
                policy_version=policy.version,
                policy_score=0.99,
            )
        ]
    )
    return store


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with fresh_database(request, tmp_path_factory.mktemp("review-store")) as url:
        yield url


@pytest.fixture(scope="module")
def reviewers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reviewers") / "reviewers.yaml"
    path.write_text(reviewers_yaml(TOKENS))
    return path


@pytest.fixture(scope="module")
def store(database_url: str) -> Iterator[ScoreStore]:
    opened = seeded_store(database_url)
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def server(store: ScoreStore, reviewers_file: Path) -> Iterator[ReviewServer]:
    with ReviewServer(env(store.url, reviewers_file, "https://commons.example.org")) as running:
        yield running


@pytest.fixture
def client(server: ReviewServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as http:
        yield http


def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert found, response.text[:2000]
    return found.group(1)


def login(client: httpx.Client, reviewer: str = "alice", tokens: dict[str, str] = TOKENS) -> str:
    """Logs ``client`` in; returns the session's new CSRF token."""
    token = csrf_of(client.get("/login"))
    response = client.post("/login", data={"csrf_token": token, "token": tokens[reviewer]})
    assert response.status_code == 303, response.text
    page = client.get("/")
    assert page.status_code == 200, page.text[:2000]
    return csrf_of(page)


def sent_to_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login")


def error_of(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("application/json"):
        return str(response.json()["error"])
    found = re.search(r'id="error-message">([^<]*)<', response.text)
    assert found, response.text[:2000]
    return html.unescape(found.group(1))


def shown(response: httpx.Response) -> list[tuple[str, str]]:
    """(sha1, model) of each item on a queue page, in order."""
    return re.findall(r'data-sha1="([0-9a-f]{40})" data-model="([^"]+)"', response.text)


def keys(items: list[QueueItem]) -> list[tuple[str, str]]:
    return [(item.sha1, item.model) for item in items]


def first_unreviewed(
    store: ScoreStore, model: str = "logo-detection", state: str | None = None
) -> QueueItem:
    """The top item awaiting a verdict, but the hostile one (others check how it is shown)."""
    items = review_queue(store, model=model, state=state, limit=2).items
    return next(item for item in items if item.sha1 != HOSTILE_SHA1)


def report_of(database_url: str, out: Path) -> dict[str, Any]:
    """`commons-moderation report`'s report.json."""

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moderation",
            "report",
            "--out",
            str(out),
            "--database-url",
            database_url,
            "--resamples",
            "100",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return dict(json.loads((out / "report.json").read_text()))


def verdict_form(csrf: str | None, item: QueueItem, verdict: str = "confirmed") -> dict[str, str]:
    form = {
        "sha1": item.sha1,
        "model": item.model,
        "verdict": verdict,
        "sample": "queue",
        "back": "/",
        "position": "0",
    }
    if csrf is not None:
        form["csrf_token"] = csrf
    return form


# Over HTTP -------------------------------------------------------------------------------


def test_headers_escaping_and_thumbnails(client: httpx.Client) -> None:
    login(client)
    response = client.get("/?model=logo-detection")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "img-src 'self' https://commons.example.org;" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    name = "Logo_%22quoted%22_%3Cscript%3Ealert%281%29%3C%2Fscript%3E_%26_more.png"
    assert (
        f'src="https://commons.example.org/wiki/Special:FilePath/{name}?width=240"' in response.text
    )
    assert f'href="https://commons.example.org/wiki/File:{name}"' in response.text
    # The only script is the app's own file.
    assert re.findall(r"<script[^>]*>", response.text) == ['<script src="/static/review.js" defer>']
    script = client.get("/static/review.js")
    assert script.status_code == 200 and "keydown" in script.text


def test_login_sets_a_strict_http_only_session(client: httpx.Client) -> None:
    csrf = csrf_of(client.get("/login"))
    wrong = client.post("/login", data={"csrf_token": csrf, "token": "not-a-token-of-anyone"})
    assert wrong.status_code == 403
    assert "belongs to no reviewer" in wrong.text
    empty = client.post("/login", data={"csrf_token": csrf, "token": " "})
    assert empty.status_code == 400 and "enter your reviewer token" in empty.text

    response = client.post("/login", data={"csrf_token": csrf, "token": TOKENS["bob"]})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/")
    assert '<span id="reviewer">bob</span>' in page.text
    # Logging in issues a new CSRF token: one from before the login is no good after it.
    assert csrf_of(page) != csrf


def test_only_login_static_files_and_health_are_open_to_visitors(
    client: httpx.Client, store: ScoreStore
) -> None:
    for path in ("/", "/?reviewed=1", "/?sample=audit", "/?state=withhold_all&offset=10"):
        response = client.get(path)
        assert sent_to_login(response), path
        # Nothing of the queue: no file, no title, no reviewer.
        assert "data-sha1" not in response.text and "File:" not in response.text
    assert client.get("/").headers["location"] == "/login"
    wanted = "/?sample=audit&model=nsfw-detection"
    assert client.get(wanted).headers["location"] == (
        "/login?next=%2F%3Fsample%3Daudit%26model%3Dnsfw-detection"
    )
    assert client.get("/healthz").text == "ok"
    assert client.get("/static/review.css").status_code == 200
    login_page = client.get("/login?next=%2F%3Fsample%3Daudit%26model%3Dnsfw-detection")
    assert login_page.status_code == 200 and 'id="token"' in login_page.text
    assert "data-sha1" not in login_page.text

    # After logging in, the reviewer lands where they were going; anywhere else is the queue.
    for given, lands in [
        (wanted, "/?sample=audit&model=nsfw-detection"),
        ("//evil.example/", "/"),
        ("https://evil.example/?x=1", "/"),
        ("/?model=cat-detection", "/"),
        ("/\\evil.example", "/"),
    ]:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as fresh:
            csrf = csrf_of(fresh.get("/login"))
            response = fresh.post(
                "/login", data={"csrf_token": csrf, "token": TOKENS["alice"], "next": given}
            )
            assert response.status_code == 303 and response.headers["location"] == lands, given


def test_writes_need_a_logged_in_reviewer(client: httpx.Client, store: ScoreStore) -> None:
    item = first_unreviewed(store)
    before = verdicts(store)
    anonymous = client.post("/verdicts", data=verdict_form(csrf_of(client.get("/login")), item))
    assert anonymous.status_code == 403
    assert "not logged in" in error_of(anonymous)

    page_csrf = login(client)
    out = client.post("/logout", data={"csrf_token": page_csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert sent_to_login(client.get("/"))
    after_logout = client.post("/verdicts", data=verdict_form(csrf_of(client.get("/login")), item))
    assert after_logout.status_code == 403
    assert "not logged in" in error_of(after_logout)
    assert verdicts(store) == before


def test_every_form_needs_the_session_csrf_token(
    client: httpx.Client, server: ReviewServer, store: ScoreStore
) -> None:
    item = first_unreviewed(store)
    before = verdicts(store)
    csrf = login(client)
    with httpx.Client(base_url=server.url, timeout=30) as other:
        someone_elses = login(other, "bob")

    missing = client.post("/verdicts", data=verdict_form(None, item))
    assert missing.status_code == 403
    assert "CSRF token missing" in error_of(missing)
    for wrong in ("x" * 43, someone_elses):
        refused = client.post("/verdicts", data=verdict_form(wrong, item))
        assert refused.status_code == 403
        assert "CSRF token does not match" in error_of(refused)
    # Without the session cookie, the right token is no good either.
    with httpx.Client(base_url=server.url, timeout=30) as cookieless:
        refused = cookieless.post("/verdicts", data=verdict_form(csrf, item))
        assert refused.status_code == 403
        assert "no session for this CSRF token" in error_of(refused)
    assert client.post("/login", data={"token": TOKENS["alice"]}).status_code == 403
    assert client.post("/logout", data={"next": "/"}).status_code == 403
    assert '<span id="reviewer">alice</span>' in client.get("/").text  # still logged in
    assert verdicts(store) == before

    given = client.post("/verdicts", data=verdict_form(csrf, item, "rejected"))
    assert given.status_code == 303
    assert given.headers["location"] == "/#item-0"
    added = verdicts(store)[len(before) :]
    assert [(v.sha1, v.model, v.verdict, v.reviewer) for v in added] == [
        (item.sha1, item.model, "rejected", "alice")
    ]


def test_bad_verdict_forms_are_named(client: httpx.Client, store: ScoreStore) -> None:
    csrf = login(client)
    item = first_unreviewed(store)
    cases = {
        "sha1": ({"sha1": "ABC"}, 400),
        "verdict": ({"verdict": "maybe"}, 400),
        "unknown model": ({"model": "cat-detection"}, 400),
        "no stored result": ({"sha1": "0" * 40}, 404),
    }
    for expected, (change, status) in cases.items():
        response = client.post("/verdicts", data={**verdict_form(csrf, item), **change})
        assert response.status_code == status, (expected, response.text[:500])
        assert expected in error_of(response)
    as_json = client.post("/verdicts", json=verdict_form(csrf, item))
    assert as_json.status_code == 415
    huge = client.post("/verdicts", data={**verdict_form(csrf, item), "note": "x" * 20_000})
    assert huge.status_code == 413 and "request body over" in huge.text
    # Chunked, without a Content-Length: refused once the bytes read pass the limit.
    chunked = client.post(
        "/verdicts",
        content=iter([b"note=" + b"x" * 10_000, b"x" * 10_000]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413 and "request body over" in error_of(chunked)


def test_api_verdicts_and_their_errors(
    client: httpx.Client, server: ReviewServer, store: ScoreStore
) -> None:
    item = first_unreviewed(store, "nsfw-detection", "withhold_popular")
    body = {
        "sha1": item.sha1,
        "model": item.model,
        "verdict": "confirmed",
        "note": "clearly",
        "sample": "audit",
    }
    bearer = {"Authorization": f"Bearer {TOKENS['bob']}"}
    before = verdicts(store)

    def post(headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        return client.post("/api/verdicts", headers=headers, **kwargs)

    unauthenticated = post({}, json=body)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in unauthenticated.json()["error"]
    assert post({"Authorization": f"Basic {TOKENS['bob']}"}, json=body).status_code == 401
    unknown = post({"Authorization": "Bearer someone-else-entirely-000"}, json=body)
    assert unknown.status_code == 403 and "no reviewer" in unknown.json()["error"]
    # A logged-in session is not a bearer token.
    login(client, "bob")
    assert post({}, json=body).status_code == 401

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ({"json": [body]}, 400, "JSON object"),
        ({"json": {**body, "sha1": "xyz"}}, 400, "sha1"),
        ({"json": {k: v for k, v in body.items() if k != "verdict"}}, 400, "verdict"),
        ({"json": {**body, "verdict": "maybe"}}, 400, "verdict"),
        ({"json": {**body, "sample": "random"}}, 400, "sample: must be one of queue, audit"),
        ({"json": {**body, "extra": 1}}, 400, "extra"),
        ({"json": {**body, "note": "n" * 5000}}, 400, "note"),
        ({"json": {**body, "model": "cat-detection"}}, 400, "cat-detection"),
        ({"json": {**body, "sha1": "1" * 40}}, 404, "no stored result"),
        ({"content": b"sha1=x", "headers": {"Content-Type": "text/plain"}}, 415, "JSON"),
        ({"json": {**body, "note": "n" * 20_000}}, 413, "request body over"),
    ]
    for kwargs, status, named in cases:
        headers = {**bearer, **kwargs.pop("headers", {})}
        response = post(headers, **kwargs)
        assert response.status_code == status, (kwargs, response.text[:300])
        text = response.json()["error"] if status != 413 else response.text
        assert named in text, (kwargs, text)
    assert verdicts(store) == before

    created = post(bearer, json=body)
    assert created.status_code == 201, created.text
    assert created.json() | {"at": None} == {**body, "reviewer": "bob", "at": None}
    added = verdicts(store)[len(before) :]
    assert [(v.sha1, v.model, v.verdict, v.reviewer, v.note, v.sample) for v in added] == [
        (item.sha1, item.model, "confirmed", "bob", "clearly", "audit")
    ]
    # Without "sample", a verdict is from the flagged queue.
    other = first_unreviewed(store, "logo-detection")
    created = post(bearer, json={"sha1": other.sha1, "model": other.model, "verdict": "rejected"})
    assert created.status_code == 201 and created.json()["sample"] == "queue"
    assert verdicts(store)[-1].sample == "queue"


def test_filters(client: httpx.Client, store: ScoreStore) -> None:
    login(client)
    reviewed = first_unreviewed(store, "nsfw-detection", "withhold_popular")
    add_verdict(
        store,
        Verdict(reviewed.sha1, reviewed.model, "rejected", "carol", reviewed.scored_at),
    )
    for params in (
        {"model": "logo-detection"},
        {"model": "nsfw-detection", "state": "withhold_popular"},
        {"state": "withhold_all"},
        {"state": "ok"},
        {"state": "undecided"},
        {"reviewed": "1"},
        {"sample": "audit"},
        {"sample": "audit", "model": "nsfw-detection"},
    ):
        response = client.get("/", params={**params, "limit": "100"})
        assert response.status_code == 200, response.text[:500]
        expected = review_queue(
            store,
            model=params.get("model"),
            models=MODELS,
            state=params.get("state"),
            reviewed=params.get("reviewed") == "1",
            audit=params.get("sample") == "audit",
            limit=100,
        )
        assert shown(response) == keys(expected.items), params
        assert expected.total > 0, params
        if "model" in params:
            assert {model for _, model in shown(response)} == {params["model"]}
    # The flagged queue ends with what the policy could not decide; the audit sample has
    # every state, ok included, in SHA-1 order.
    flagged = shown(client.get("/", params={"limit": "100"}))
    assert flagged[-1] == (UNDECIDED_SHA1, "nsfw-detection")
    audit = client.get("/", params={"sample": "audit", "limit": "100"})
    assert shown(audit) == sorted(shown(audit))
    assert set(re.findall(r'data-state="([a-z_]+)"', audit.text)) == {
        "withhold_all",
        "withhold_popular",
        "needs_review",
        "ok",
        "undecided",
    }
    assert audit.text.count('name="sample" value="audit"') == len(shown(audit)) + 1
    for query, named in [
        ("model=cat-detection", "unknown model 'cat-detection'"),
        ("state=fine", "unknown state 'fine'"),
        ("reviewed=maybe", "reviewed must be 0 or 1"),
        ("sample=random", "unknown sample 'random'"),
        ("sample=audit&state=ok", "the audit sample takes no state filter"),
    ]:
        response = client.get(f"/?{query}")
        assert response.status_code == 400 and named in error_of(response), query


def test_pages_and_their_bounds(client: httpx.Client, store: ScoreStore) -> None:
    login(client)
    everything = review_queue(store, models=MODELS, limit=100)
    assert 2 * PAGE < everything.total <= 100
    seen: list[tuple[str, str]] = []
    url: str | None = "/"
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        assert len(shown(response)) <= PAGE
        seen.extend(shown(response))
        found = re.search(r'rel="next" href="([^"]+)"', response.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == keys(everything.items)

    for query, named in [
        ("limit=0", "limit must be a whole number from 1 to 100"),
        ("limit=101", "limit must be a whole number from 1 to 100"),
        ("offset=-1", "offset must be a whole number"),
        ("offset=abc", "offset must be a whole number"),
        ("offset=" + "9" * 30, "offset must be a whole number"),
    ]:
        response = client.get(f"/?{query}")
        assert response.status_code == 400 and named in error_of(response), query
    past = client.get("/?offset=100000&limit=7")
    assert past.status_code == 303
    last = (everything.total - 1) // 7 * 7
    assert past.headers["location"] == f"/?offset={last}&limit=7"
    assert client.get("/nowhere").status_code == 404


def test_refuses_to_start_without_a_secret_reviewers_or_a_migrated_store(
    reviewers_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'scores.sqlite3'}"
    base = {**os.environ, **env(url, reviewers_file, "https://commons.example.org")}

    def start(**changes: str | None) -> subprocess.CompletedProcess[str]:
        changed = {**base, "REVIEW_PORT": "0", **changes}
        return subprocess.run(
            [sys.executable, "-m", "review"],
            check=False,
            cwd=ROOT,
            env={name: value for name, value in changed.items() if value is not None},
            capture_output=True,
            text=True,
            timeout=60,
        )

    for changes, named in [
        ({"REVIEW_SECRET_KEY": None}, "REVIEW_SECRET_KEY is not set"),
        ({"REVIEW_SECRET_KEY": "short"}, "REVIEW_SECRET_KEY has 5 characters"),
        ({"REVIEWERS_FILE": None}, "REVIEWERS_FILE is not set"),
        ({"REVIEWERS_FILE": str(tmp_path / "absent.yaml")}, "absent.yaml"),
        ({"COMMONS_URL": "javascript:alert(1)"}, "COMMONS_URL must be an http(s) URL"),
        # The page does not migrate: an empty store is refused, naming what to run.
        ({}, "the score store's schema is at revision (none: empty)"),
        ({}, "migrate it with `commons-moderation migrate`"),
    ]:
        result = start(**changes)
        assert result.returncode != 0, changes
        assert named in result.stderr, (changes, result.stderr[-2000:])
    with sqlalchemy.create_engine(url).connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == []  # it changed nothing

    migrated = subprocess.run(
        [sys.executable, "-m", "moderation", "migrate", "--database-url", url],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    dev = {**base, "REVIEW_DEV": "true"}
    dev.pop("REVIEW_SECRET_KEY")
    with ReviewServer(dev) as running:
        assert httpx.get(f"{running.url}/healthz").text == "ok"
        assert "REVIEW_DEV: sessions are signed with a secret made for this process" in (
            running.log()
        )

    # Where the page may change the schema, it migrates when told to.
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    with ReviewServer({**base, "DATABASE_URL": other, "REVIEW_STORE_MIGRATE": "true"}) as running:
        assert httpx.get(f"{running.url}/healthz").text == "ok"
    with sqlalchemy.create_engine(other).connect() as conn:
        assert "verdicts" in sqlalchemy.inspect(conn).get_table_names()


def session_cookie(secret: str, session: dict[str, Any]) -> str:
    """A session cookie as the page signs one (Starlette's SessionMiddleware)."""
    data = b64encode(json.dumps(session).encode())
    return itsdangerous.TimestampSigner(secret).sign(data).decode()


def test_sessions_end_with_their_lifetime_a_logout_or_the_reviewer(
    store: ScoreStore, tmp_path: Path
) -> None:
    tokens = {"dora": "dora-token-0123456789abcdef", "erin": "erin-token-0123456789abcdef"}
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text(reviewers_yaml(tokens))
    settings = {
        **env(store.url, reviewers, "https://commons.example.org"),
        "REVIEW_SESSION_HOURS": "1",
    }
    secret = settings["REVIEW_SECRET_KEY"]
    item = first_unreviewed(store)
    before = verdicts(store)
    with ReviewServer(settings) as server:

        def client(cookie: str | None = None) -> httpx.Client:
            cookies = {"review_session": cookie} if cookie is not None else None
            return httpx.Client(base_url=server.url, timeout=30, cookies=cookies)

        # A session is good for REVIEW_SESSION_HOURS from its login, however busy.
        generation = session_generation(store, "dora")
        for age_s, good in ((60, True), (3600 - 60, True), (3600 + 60, False)):
            session = {
                "reviewer": "dora",
                "since": int(time.time()) - age_s,
                "generation": generation,
                "csrf": "c" * 43,
            }
            with client(session_cookie(secret, session)) as http:
                response = http.get("/")
                if good:
                    assert response.status_code == 200 and '<span id="reviewer">dora</span>' in (
                        response.text
                    ), age_s
                else:
                    assert sent_to_login(response), age_s
                    assert "Your session has ended" in http.get("/login").text

        # Logging out ends the session for a copy of its cookie too.
        with client() as http:
            csrf = login(http, "erin", tokens)
            copied = http.cookies["review_session"]
            assert http.post("/logout", data={"csrf_token": csrf}).status_code == 303
        with client(copied) as replay:
            assert sent_to_login(replay.get("/"))
        with client(copied) as replay:
            refused = replay.post("/verdicts", data=verdict_form(csrf, item))
            assert refused.status_code == 403 and "not logged in" in error_of(refused)
        with client() as http:
            login(http, "erin", tokens)  # a new login is a new session

        # A reviewer taken out of the file is out from their next request on.
        with client() as http:
            login(http, "dora", tokens)
            reviewers.write_text(reviewers_yaml({"erin": tokens["erin"]}))
            assert sent_to_login(http.get("/"))
            csrf = csrf_of(http.get("/login"))
            again = http.post("/login", data={"csrf_token": csrf, "token": tokens["dora"]})
            assert again.status_code == 403 and "belongs to no reviewer" in again.text
            bearer = {"Authorization": f"Bearer {tokens['dora']}"}
            api = http.post(
                "/api/verdicts",
                headers=bearer,
                json={"sha1": item.sha1, "model": item.model, "verdict": "rejected"},
            )
            assert api.status_code == 403
        with client() as http:
            login(http, "erin", tokens)
        assert "reviewers file" in server.log() and "read again: 1 reviewers" in server.log()
    assert verdicts(store) == before


# In a browser ------------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    try:
        with chromium(1280, 1000) as driver:
            yield driver
    except BrowserMissing as exc:
        pytest.fail(str(exc))


def press(browser: WebDriver, key: str, *, navigates: bool) -> None:
    """Types ``key`` on the page; with ``navigates``, waits for the next page to load."""
    old = browser.find_element(By.TAG_NAME, "html")
    ActionChains(browser).send_keys(key).perform()
    if navigates:
        # While the document is being replaced, Chromium can answer the staleness probe with an
        # "unhandled inspector error" instead of "stale element": poll again.
        WebDriverWait(browser, WAIT_S, ignored_exceptions=(WebDriverException,)).until(ready.staleness_of(old))
        WebDriverWait(browser, WAIT_S).until(
            lambda b: b.execute_script("return document.readyState") == "complete"
        )


def on_page(browser: WebDriver) -> list[tuple[str, str]]:
    return [
        (item.get_attribute("data-sha1") or "", item.get_attribute("data-model") or "")
        for item in browser.find_elements(By.CSS_SELECTOR, "li.item")
    ]


def selected(browser: WebDriver) -> str | None:
    found = browser.find_elements(By.CSS_SELECTOR, "li.item.selected")
    return found[0].get_attribute("id") if len(found) == 1 else None


def flash(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "flash").text


def thumbnails_loaded(browser: WebDriver) -> bool:
    return bool(
        browser.execute_script(
            "const shown = Array.from(document.images);"
            "return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0);"
        )
    )


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+")


def own_problems(browser: WebDriver, origin: str) -> list[dict[str, Any]]:
    """SEVERE console entries from the app's own origin: those naming one of its URLs (a
    CSP violation on its page, a file it failed to serve), and those naming no URL at all
    (a script error or blocked inline script, on the only pages the browser shows: the
    app's). Entries naming only other origins are Chromium's own noise or the Commons
    stand-in's, not the app's."""
    problems = []
    for entry in browser.get_log("browser"):
        urls = _URL.findall(entry["message"])
        if entry["level"] == "SEVERE" and (
            not urls or any(url.startswith(f"{origin}/") or url == origin for url in urls)
        ):
            problems.append(entry)
    return problems


def test_review_by_keyboard_in_chromium(
    browser: WebDriver, reviewers_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'scores.sqlite3'}"
    store = seeded_store(url)
    assert report_of(url, tmp_path / "report-before")["models"] == []
    wait = WebDriverWait(browser, WAIT_S)
    problems: list[dict[str, Any]] = []
    with (
        FakeFilePath() as commons,
        ReviewServer(env(url, reviewers_file, commons.base_url)) as server,
    ):
        # Visitors see nothing but the login page, which leads back where they were going.
        browser.get(f"{server.url}/?offset={PAGE}")
        wait.until(ready.presence_of_element_located((By.ID, "token")))
        assert urlsplit(browser.current_url).path == "/login"
        assert browser.find_elements(By.CSS_SELECTOR, "li.item") == []
        browser.find_element(By.ID, "token").send_keys(TOKENS["alice"])
        browser.find_element(By.ID, "login-button").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "flash"), "Logged in as alice"))
        assert browser.find_element(By.ID, "reviewer").text == "alice"
        assert f"offset={PAGE}" in browser.current_url

        pages = [
            keys(review_queue(store, models=MODELS, offset=o, limit=PAGE).items)
            for o in (0, PAGE, 2 * PAGE)
        ]
        assert on_page(browser) == pages[1]
        press(browser, "p", navigates=True)
        assert on_page(browser) == pages[0]
        assert selected(browser) == "item-0"
        # Thumbnails come from (the stand-in for) Commons, and the page's CSP lets them in.
        wait.until(thumbnails_loaded)
        assert len(commons.thumbnails_served()) >= PAGE
        press(browser, "n", navigates=True)
        assert on_page(browser) == pages[1]
        press(browser, "n", navigates=True)
        assert on_page(browser) == pages[2]
        press(browser, "p", navigates=True)
        press(browser, "p", navigates=True)
        assert on_page(browser) == pages[0]

        for key, then in (("j", "item-1"), ("j", "item-2"), ("k", "item-1")):
            press(browser, key, navigates=False)
            wait.until(lambda b, then=then: selected(b) == then)
        confirmed = on_page(browser)[1]
        # Keys typed into a note are the note, not commands.
        note = browser.find_element(By.CSS_SELECTOR, "#item-1 input[name=note]")
        note.click()
        ActionChains(browser).send_keys("c r n").perform()
        assert note.get_attribute("value") == "c r n"
        assert verdicts(store) == [] and on_page(browser)[1] == confirmed
        browser.find_element(By.CSS_SELECTOR, "#item-1 .about").click()
        press(browser, "c", navigates=True)
        assert flash(browser).startswith("Confirmed: ")
        assert confirmed not in on_page(browser)
        # The selection stays where it was: on the item that moved up into its place.
        assert selected(browser) == "item-1"
        rejected = on_page(browser)[1]
        press(browser, "r", navigates=True)
        assert flash(browser).startswith("Rejected: ")
        assert rejected not in on_page(browser)
        assert on_page(browser) == keys(review_queue(store, models=MODELS, limit=PAGE).items)

        REPORTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(REPORTS / "review-page.png"))
        problems += own_problems(browser, server.url)

        browser.get(f"{server.url}/?reviewed=1")
        wait.until(ready.presence_of_element_located((By.ID, "item-0")))
        assert set(on_page(browser)) == {confirmed, rejected}

        # The audit sample: every state in SHA-1 order; its verdicts say where they came from.
        browser.find_element(By.ID, "tab-audit").click()
        wait.until(ready.presence_of_element_located((By.ID, "about-sample")))
        audit_page = keys(review_queue(store, models=MODELS, audit=True, limit=PAGE).items)
        assert on_page(browser) == audit_page
        audited = audit_page[0]
        press(browser, "c", navigates=True)
        assert flash(browser).startswith("Confirmed: ")
        assert "sample=audit" in browser.current_url
        assert on_page(browser)[0] == audit_page[1]
        problems += own_problems(browser, server.url)

    # No CSP violation, failed script or missing file on any of the app's pages.
    assert problems == [], problems
    given = [(v.sha1, v.model, v.verdict, v.reviewer, v.note, v.sample) for v in verdicts(store)]
    assert given == [
        (*confirmed, "confirmed", "alice", "c r n", "queue"),
        (*rejected, "rejected", "alice", None, "queue"),
        (*audited, "confirmed", "alice", None, "audit"),
    ]
    store.dispose()
    latest: dict[tuple[str, str], str] = {}
    for sha1, model, verdict, *_ in given:
        latest[(sha1, model)] = verdict
    expected = {}
    for model in sorted({model for _, model in latest}):
        labels = [v for (_, m), v in latest.items() if m == model]
        audit = [v for (s, m), v in latest.items() if m == model and (s, m) == audited]
        expected[(model, "2")] = (
            labels.count("confirmed"),
            labels.count("rejected"),
            {
                "verdicts": len(audit),
                "confirmed": audit.count("confirmed"),
                "rejected": audit.count("rejected"),
            },
        )
    report = report_of(url, tmp_path / "report-after")
    assert {
        (row["model"], row["model_version"]): (row["confirmed"], row["rejected"], row["audit"])
        for row in report["models"]
    } == expected
