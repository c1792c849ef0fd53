"""The review page: the queue of stored results that need a reviewer, highest priority
first, the audit sample of all results, and the verdicts reviewers give on them (a form per
item, or the JSON API). Everything but the login page, static files and the health check
needs a logged-in reviewer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from moderation.policy import Policy
from moderation.reviewers import ReviewersFile
from review.security import (
    CSRF_FIELD,
    BodyLimit,
    SecurityHeaders,
    check_csrf,
    content_security_policy,
    csrf_token,
    new_csrf_token,
)
from review.settings import Settings
from store.review import (
    AUDIT,
    MAX_PAGE,
    NOTE_LENGTH,
    QUEUE,
    QUEUE_STATES,
    SAMPLES,
    VERDICTS,
    QueueItem,
    Verdict,
    add_verdict,
    end_sessions,
    review_queue,
    session_generation,
)
from store.schema import MODEL_LENGTH
from store.scores import ScoreStore, StoreError

log = logging.getLogger("review")

HERE = Path(__file__).resolve().parent
# Far past any real queue; bounds the OFFSET a client can make the database skip.
MAX_OFFSET = 10_000_000
MAX_TOKEN_LENGTH = 512
THUMBNAIL_WIDTH = 240
# Form fields are few and short: python-multipart need not buffer more.
MAX_FORM_FIELDS = 16
_REVIEWER_KEY = "reviewer"
_SINCE_KEY = "since"
_GENERATION_KEY = "generation"
_FLASH_KEY = "flash"
_VERDICT_WORDS = {"confirmed": "Confirmed", "rejected": "Rejected"}


@dataclass(frozen=True)
class QueueQuery:
    sample: str
    model: str | None
    state: str | None
    reviewed: bool
    offset: int
    limit: int
    page_size: int

    @property
    def audit(self) -> bool:
        return self.sample == AUDIT

    def url(self, **changes: Any) -> str:
        """The queue's URL for this query with ``changes``; defaults are left out."""
        values = {**self.__dict__, **changes}
        params = {
            "sample": values["sample"] if values["sample"] != QUEUE else None,
            "model": values["model"],
            "state": values["state"],
            "reviewed": "1" if values["reviewed"] else None,
            "offset": values["offset"] or None,
            "limit": values["limit"] if values["limit"] != self.page_size else None,
        }
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"/?{query}" if query else "/"


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sha1: str = Field(pattern=r"^[0-9a-f]{40}$")
    model: str = Field(min_length=1, max_length=MODEL_LENGTH)
    verdict: str
    note: str | None = Field(None, max_length=NOTE_LENGTH)
    sample: str = QUEUE

    @field_validator("verdict")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in VERDICTS:
            raise ValueError(f"must be one of {', '.join(VERDICTS)}")
        return value

    @field_validator("sample")
    @classmethod
    def _known_sample(cls, value: str) -> str:
        if value not in SAMPLES:
            raise ValueError(f"must be one of {', '.join(SAMPLES)}")
        return value


class Commons:
    """Links and thumbnail URLs on the configured Commons: built here, from titles escaped
    into the path, never taken from a client."""

    def __init__(self, base: str) -> None:
        self.base = base

    @staticmethod
    def _name(title: str) -> str:
        name = title.removeprefix("File:").strip().replace(" ", "_")
        return quote(name, safe="")

    def page(self, title: str) -> str:
        return f"{self.base}/wiki/File:{self._name(title)}"

    def thumbnail(self, title: str, width: int = THUMBNAIL_WIDTH) -> str:
        return f"{self.base}/wiki/Special:FilePath/{self._name(title)}?width={width}"


def create_app(
    settings: Settings,
    *,
    session_secret: str,
    store: ScoreStore,
    reviewers: ReviewersFile,
    policy: Policy,
) -> Starlette:
    """``session_secret`` signs the session cookies (``Settings.session_secret``)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates = Jinja2Templates(env=environment)
    commons = Commons(settings.commons_url)
    models = tuple(sorted(policy.models))
    session_s = round(settings.review_session_hours * 3600)

    async def logged_in(request: Request) -> str | None:
        """The session's reviewer, while they are still in the reviewers file, the session
        is younger than its lifetime, and they have not logged out since it began. The
        cookie cannot bound the lifetime: Starlette signs it afresh on every response to
        a request that has a session, so its own expiry only bounds idleness."""
        name = request.session.get(_REVIEWER_KEY)
        if name is None:
            return None
        since = request.session.get(_SINCE_KEY)
        generation = request.session.get(_GENERATION_KEY)
        valid = (
            isinstance(name, str)
            and name in reviewers.current().names
            and isinstance(since, int)
            and 0 <= time.time() - since < session_s
            and isinstance(generation, int)
            and generation == await _stored(session_generation, store, name)
        )
        if valid:
            return name
        for key in (_REVIEWER_KEY, _SINCE_KEY, _GENERATION_KEY):
            request.session.pop(key, None)
        request.session[_FLASH_KEY] = "Your session has ended: log in again"
        return None

    def render(
        request: Request,
        name: str,
        status: int = 200,
        *,
        reviewer: str | None,
        **context: Any,
    ) -> Response:
        return templates.TemplateResponse(
            request,
            name,
            {
                "reviewer": reviewer,
                "csrf_token": csrf_token(request),
                "csrf_field": CSRF_FIELD,
                "flash": request.session.pop(_FLASH_KEY, None),
                **context,
            },
            status_code=status,
        )

    def parse_query(params: Any) -> QueueQuery:
        sample = params.get("sample") or QUEUE
        if sample not in SAMPLES:
            raise HTTPException(400, f"unknown sample {sample!r}: one of {', '.join(SAMPLES)}")
        model = params.get("model") or None
        if model is not None and model not in models:
            raise HTTPException(400, f"unknown model {model!r}: one of {', '.join(models)}")
        state = params.get("state") or None
        if state is not None and state not in QUEUE_STATES:
            raise HTTPException(400, f"unknown state {state!r}: one of {', '.join(QUEUE_STATES)}")
        if state is not None and sample == AUDIT:
            raise HTTPException(
                400, "the audit sample takes no state filter: it samples every state"
            )
        reviewed = params.get("reviewed") or "0"
        if reviewed not in ("0", "1"):
            raise HTTPException(400, f"reviewed must be 0 or 1, not {reviewed!r}")
        return QueueQuery(
            sample=sample,
            model=model,
            state=state,
            reviewed=reviewed == "1",
            offset=_integer(params, "offset", 0, 0, MAX_OFFSET),
            limit=_integer(params, "limit", settings.review_page_size, 1, MAX_PAGE),
            page_size=settings.review_page_size,
        )

    def queue_url(raw: object) -> str:
        """``raw`` as a queue URL of this page's own making; the queue for anything else,
        so a link cannot send a reviewer elsewhere after logging in."""
        text = raw if isinstance(raw, str) else ""
        if text not in ("", "/") and not text.startswith("/?"):
            return "/"
        try:
            return parse_query(dict(parse_qsl(text.removeprefix("/").removeprefix("?")))).url()
        except HTTPException:
            return "/"

    async def queue(request: Request) -> Response:
        reviewer = await logged_in(request)
        if reviewer is None:
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target = "/login" if wanted == "/" else f"/login?{urlencode({'next': wanted})}"
            return RedirectResponse(target, status_code=303)
        query = parse_query(request.query_params)
        page = await _stored(
            review_queue,
            store,
            model=query.model,
            models=models,
            state=query.state,
            reviewed=query.reviewed,
            audit=query.audit,
            offset=query.offset,
            limit=query.limit,
        )
        if not page.items and query.offset > 0 and page.total > 0:
            last = (page.total - 1) // query.limit * query.limit
            return RedirectResponse(query.url(offset=last), status_code=303)
        previous_url = (
            query.url(offset=max(0, query.offset - query.limit)) if query.offset > 0 else None
        )
        end = query.offset + len(page.items)
        next_url = query.url(offset=end) if end < page.total else None
        return render(
            request,
            "queue.html",
            reviewer=reviewer,
            query=query,
            page=page,
            items=[_view(item, commons, policy) for item in page.items],
            first=query.offset + 1 if page.items else 0,
            last=end,
            previous_url=previous_url,
            next_url=next_url,
            models=models,
            states=QUEUE_STATES,
            flagged_url=QueueQuery(
                QUEUE, query.model, None, False, 0, query.limit, query.page_size
            ).url(),
            audit_url=QueueQuery(
                AUDIT, query.model, None, False, 0, query.limit, query.page_size
            ).url(),
            back=query.url(),
            note_length=NOTE_LENGTH,
        )

    async def login_page(request: Request) -> Response:
        return render(
            request,
            "login.html",
            reviewer=await logged_in(request),
            error=None,
            next=queue_url(request.query_params.get("next")),
        )

    async def login(request: Request) -> Response:
        form = await _form(request)
        check_csrf(request, form.get(CSRF_FIELD))
        token = form.get("token")
        after = queue_url(form.get("next"))

        def refuse(status: int, error: str) -> Response:
            return render(request, "login.html", status, reviewer=None, error=error, next=after)

        if not isinstance(token, str) or not token.strip():
            return refuse(400, "enter your reviewer token")
        if len(token) > MAX_TOKEN_LENGTH:
            return refuse(400, "that token is too long to be one")
        name = reviewers.current().identify(token.strip())
        if name is None:
            return refuse(403, "that token belongs to no reviewer")
        generation = await _stored(session_generation, store, name)
        # A new session: whatever a visitor had before logging in is not carried over.
        request.session.clear()
        request.session[_REVIEWER_KEY] = name
        request.session[_SINCE_KEY] = int(time.time())
        request.session[_GENERATION_KEY] = generation
        new_csrf_token(request)
        request.session[_FLASH_KEY] = f"Logged in as {name}"
        log.info("reviewer %s logged in", name)
        return RedirectResponse(after, status_code=303)

    async def logout(request: Request) -> Response:
        form = await _form(request)
        check_csrf(request, form.get(CSRF_FIELD))
        reviewer = await logged_in(request)
        if reviewer is not None:
            # Every session of theirs ends, a copy of this cookie included.
            await _stored(end_sessions, store, reviewer)
            log.info("reviewer %s logged out", reviewer)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def verdict_form(request: Request) -> Response:
        form = await _form(request)
        check_csrf(request, form.get(CSRF_FIELD))
        reviewer = await logged_in(request)
        if reviewer is None:
            raise HTTPException(
                403, "not logged in: log in with your reviewer token to give verdicts"
            )
        back = queue_url(form.get("back"))
        fields = {name: form.get(name) for name in ("sha1", "model", "verdict")}
        note = form.get("note")
        if isinstance(note, str) and note.strip():
            fields["note"] = note.strip()
        sample = form.get("sample")
        if sample is not None:
            fields["sample"] = sample
        verdict = _validated(fields, reviewer)
        await _record(store, verdict, models)
        request.session[_FLASH_KEY] = (
            f"{_VERDICT_WORDS[verdict.verdict]}: {verdict.model} {verdict.sha1[:12]}…"
        )
        position = _integer(form, "position", 0, 0, MAX_PAGE)
        return RedirectResponse(f"{back}#item-{position}", status_code=303)

    async def api_verdict(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "send the reviewer token as `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        reviewer = reviewers.current().identify(token.strip())
        if reviewer is None:
            raise HTTPException(403, "that token belongs to no reviewer")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "the body must be JSON (Content-Type: application/json)")
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        verdict = _validated(body, reviewer)
        await _record(store, verdict, models)
        return JSONResponse(
            {
                "sha1": verdict.sha1,
                "model": verdict.model,
                "verdict": verdict.verdict,
                "reviewer": verdict.reviewer,
                "at": verdict.at.isoformat(),
                "note": verdict.note,
                "sample": verdict.sample,
            },
            status_code=201,
        )

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
        try:
            reviewer = await logged_in(request) if "session" in request.scope else None
        except HTTPException:
            reviewer = None
        response = render(
            request,
            "error.html",
            exc.status_code,
            reviewer=reviewer,
            message=exc.detail,
            status_code=exc.status_code,
        )
        response.headers.update(exc.headers or {})
        return response

    return Starlette(
        routes=[
            Route("/", queue),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/verdicts", verdict_form, methods=["POST"]),
            Route("/api/verdicts", api_verdict, methods=["POST"]),
            Route("/healthz", health),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders, csp=content_security_policy(settings.image_sources)),
            Middleware(BodyLimit, limit=settings.review_max_body_bytes),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret,
                session_cookie="review_session",
                max_age=session_s,
                same_site="strict",
                https_only=settings.secure_cookie,
            ),
        ],
        exception_handlers={HTTPException: http_error},
    )


def _integer(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise HTTPException(400, f"{name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be a whole number from {low} to {high}")
    return value


async def _form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


def _validated(fields: dict[str, Any], reviewer: str) -> Verdict:
    try:
        parsed = VerdictIn.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise HTTPException(400, problems) from None
    try:
        return Verdict(
            sha1=parsed.sha1,
            model=parsed.model,
            verdict=parsed.verdict,
            reviewer=reviewer,
            at=datetime.now(UTC),
            note=parsed.note,
            sample=parsed.sample,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def _record(store: ScoreStore, verdict: Verdict, models: tuple[str, ...]) -> None:
    if verdict.model not in models:
        raise HTTPException(400, f"unknown model {verdict.model!r}: one of {', '.join(models)}")
    try:
        await _stored(add_verdict, store, verdict)
    except ValueError as exc:
        # The one thing add_verdict refuses of a valid Verdict: a file it has no result for.
        raise HTTPException(404, str(exc)) from None
    log.info("%s %s %s %s", verdict.reviewer, verdict.verdict, verdict.model, verdict.sha1)


async def _stored(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except StoreError as exc:
        log.error("score store: %s", exc)
        raise HTTPException(503, "the score store is unavailable; try again shortly") from None


def _view(item: QueueItem, commons: Commons, policy: Policy) -> dict[str, Any]:
    title = item.titles[0] if item.titles else None
    rule = policy.models.get(item.model)
    return {
        # What a confirmation says the file is: the policy's label for the model.
        "label": rule.label if rule is not None else "flagged",
        "state": item.state.replace("_", " "),
        "item": item,
        "title": title,
        "other_titles": item.titles[1:],
        "page_url": commons.page(title) if title else None,
        "thumbnail_url": commons.thumbnail(title) if title else None,
        "scores": sorted(item.scores.items()),
    }
