"""The review page (`review/`), as a real server (`python -m review`) on a live store: in
headless Chromium from Debian's packages (keyboard review, paging, verdicts reaching the
store and the quality report), and over plain HTTP for what a browser hides (login, CSRF,
the bearer API, filters, paging bounds). The HTTP tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
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
from store.review import QueueItem, Verdict, add_verdict, review_queue, verdicts

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "build" / "test-reports"
TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}
PAGE = 10
SEEDED = 40
# A stored title no real Commons file has, to show it is escaped everywhere it is shown.
HOSTILE_TITLE = 'File:Logo "quoted" <script>alert(1)</script> & more.png'
HOSTILE_SHA1 = hashlib.sha1(b"hostile").hexdigest()
WAIT_S = 20

_databases = itertools.count()


def env(database_url: str, reviewers_file: Path, commons_url: str) -> dict[str, str]:
    return review_env(
        database_url, reviewers_file, commons_url, extra=[("REVIEW_PAGE_SIZE", str(PAGE))]
    )


def seeded_store(url: str) -> ScoreStore:
    store = open_store(url)
    policy = load_policy()
    seed(store, policy, SEEDED)
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
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('review-store') / 'scores.sqlite3'}"
        return
    server_url = request.getfixturevalue("postgres_url")
    name = f"review_{next(_databases)}"
    admin = sqlalchemy.create_engine(
        server_url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield sqlalchemy.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


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


def login(client: httpx.Client, reviewer: str = "alice") -> str:
    """Logs ``client`` in; returns the session's new CSRF token."""
    token = csrf_of(client.get("/login"))
    response = client.post("/login", data={"csrf_token": token, "token": TOKENS[reviewer]})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/"))


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


def report_counts(database_url: str, out: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(confirmed, rejected) per model and version, from `commons-moderation report`."""
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
    report = json.loads((out / "report.json").read_text())
    return {
        (row["model"], row["model_version"]): (row["confirmed"], row["rejected"])
        for row in report["models"]
    }


def verdict_form(csrf: str | None, item: QueueItem, verdict: str = "confirmed") -> dict[str, str]:
    form = {
        "sha1": item.sha1,
        "model": item.model,
        "verdict": verdict,
        "back": "/",
        "position": "0",
    }
    if csrf is not None:
        form["csrf_token"] = csrf
    return form


# Over HTTP -------------------------------------------------------------------------------


def test_headers_escaping_and_thumbnails(client: httpx.Client) -> None:
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


def test_writes_need_a_logged_in_reviewer(client: httpx.Client, store: ScoreStore) -> None:
    item = first_unreviewed(store)
    before = verdicts(store)
    page = client.get("/")
    assert 'action="/verdicts"' not in page.text  # no forms for visitors
    anonymous = client.post("/verdicts", data=verdict_form(csrf_of(client.get("/login")), item))
    assert anonymous.status_code == 403
    assert "not logged in" in error_of(anonymous)

    login(client)
    page = client.get("/")
    out = client.post("/logout", data={"csrf_token": csrf_of(page)})
    assert out.status_code == 303
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
    body = {"sha1": item.sha1, "model": item.model, "verdict": "confirmed", "note": "clearly"}
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
    assert [(v.sha1, v.model, v.verdict, v.reviewer, v.note) for v in added] == [
        (item.sha1, item.model, "confirmed", "bob", "clearly")
    ]


def test_filters(client: httpx.Client, store: ScoreStore) -> None:
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
        {"reviewed": "1"},
    ):
        response = client.get("/", params={**params, "limit": "100"})
        assert response.status_code == 200, response.text[:500]
        expected = review_queue(
            store,
            model=params.get("model"),
            state=params.get("state"),
            reviewed=params.get("reviewed") == "1",
            limit=100,
        )
        assert shown(response) == keys(expected.items), params
        assert expected.total > 0, params
        if "model" in params:
            assert {model for _, model in shown(response)} == {params["model"]}
    for query, named in [
        ("model=cat-detection", "unknown model 'cat-detection'"),
        ("state=fine", "unknown state 'fine'"),
        ("reviewed=maybe", "reviewed must be 0 or 1"),
    ]:
        response = client.get(f"/?{query}")
        assert response.status_code == 400 and named in error_of(response), query


def test_pages_and_their_bounds(client: httpx.Client, store: ScoreStore) -> None:
    everything = review_queue(store, limit=200)
    assert everything.total > 2 * PAGE
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


def test_refuses_to_start_without_a_secret_or_reviewers(
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
    ]:
        result = start(**changes)
        assert result.returncode != 0, changes
        assert named in result.stderr, (changes, result.stderr[-2000:])

    dev = {**base, "REVIEW_DEV": "true"}
    dev.pop("REVIEW_SECRET_KEY")
    with ReviewServer(dev) as running:
        assert httpx.get(f"{running.url}/healthz").text == "ok"
        assert "REVIEW_DEV: sessions are signed with a secret made for this process" in (
            running.log()
        )


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
        WebDriverWait(browser, WAIT_S).until(ready.staleness_of(old))
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


def test_review_by_keyboard_in_chromium(
    browser: WebDriver, reviewers_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'scores.sqlite3'}"
    store = seeded_store(url)
    report_before = report_counts(url, tmp_path / "report-before")
    wait = WebDriverWait(browser, WAIT_S)
    with (
        FakeFilePath() as commons,
        ReviewServer(env(url, reviewers_file, commons.base_url)) as server,
    ):
        browser.get(f"{server.url}/")
        wait.until(ready.presence_of_element_located((By.ID, "item-0")))
        pages = [keys(review_queue(store, offset=o, limit=PAGE).items) for o in (0, PAGE, 2 * PAGE)]
        assert on_page(browser) == pages[0]
        assert selected(browser) == "item-0"
        # Thumbnails come from (the stand-in for) Commons, and the page's CSP lets them in.
        wait.until(thumbnails_loaded)
        assert len(commons.thumbnails_served()) >= PAGE
        # Visitors see no verdict forms: the keys do nothing.
        assert browser.find_elements(By.CSS_SELECTOR, "form.act") == []

        press(browser, "n", navigates=True)
        assert on_page(browser) == pages[1]
        assert f"offset={PAGE}" in browser.current_url
        press(browser, "n", navigates=True)
        assert on_page(browser) == pages[2]
        press(browser, "p", navigates=True)
        press(browser, "p", navigates=True)
        assert on_page(browser) == pages[0]

        browser.find_element(By.ID, "login-link").click()
        wait.until(ready.presence_of_element_located((By.ID, "token")))
        browser.find_element(By.ID, "token").send_keys(TOKENS["alice"])
        browser.find_element(By.ID, "login-button").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "flash"), "Logged in as alice"))
        assert browser.find_element(By.ID, "reviewer").text == "alice"

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
        assert on_page(browser) == keys(review_queue(store, limit=PAGE).items)

        REPORTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(REPORTS / "review-page.png"))
        # No CSP violation, failed script or missing file on any page shown.
        problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == [], problems

        browser.get(f"{server.url}/?reviewed=1")
        wait.until(ready.presence_of_element_located((By.ID, "item-0")))
        assert set(on_page(browser)) == {confirmed, rejected}

    given = [(v.sha1, v.model, v.verdict, v.reviewer, v.note) for v in verdicts(store)]
    assert given == [
        (*confirmed, "confirmed", "alice", "c r n"),
        (*rejected, "rejected", "alice", None),
    ]
    store.dispose()
    expected = dict(report_before)
    for (_, model), column in ((confirmed, 0), (rejected, 1)):
        counts = list(expected.get((model, "2"), (0, 0)))
        counts[column] += 1
        expected[(model, "2")] = (counts[0], counts[1])
    assert report_counts(url, tmp_path / "report-after") == expected
