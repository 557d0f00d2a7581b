"""The admin API for ops: bearer token, its own listener, an OpenAPI schema.

FastAPI gives request validation and the OpenAPI document (``/admin/openapi.json``) from the
same pydantic models, so the schema cannot drift from the code. Every route only reads the
store, queues a job, or records an operator's decision on a request (an extension, an
exemption: a few rows and an audit entry); nothing long runs inside a request. An erasure
is recorded, its suppression entry with it, before its job is queued (as ``dsr erase``
records it before it fans out); the job does the rest.

A request the models refuse is answered 422 with where, what kind and why, never with what was
sent (see :func:`validation_failed`). The document lists every answer a route gives, the
refusals of the token check and of the body's limits included, and the bearer token.
"""

from __future__ import annotations

import hmac
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from connector import admin_reads, jobs
from connector.model import is_email_address, normalise_email

if TYPE_CHECKING:
    from connector.daemon import Daemon
    from connector.dsr import DsrService, RequestView

__all__ = ["MAX_LISTING_PAGE", "build_admin_app", "validation_failed"]


#: Job ids are SQLite integers: anything outside their range is simply not a job (422).
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

#: The error type of an address that cannot be one; its message is our own fixed text.
EMAIL_INVALID = "email_invalid"


def _email_address(value: str) -> str:
    """``value`` as subjects are known by it (:func:`normalise_email`), if it can be an address.

    Checked in the model, not in the route: refused there, the 422 was a bare text under
    ``detail``, naming no field, where the schema (and every other 422) has a list of
    location, type and message, which scripts read.
    """
    email = normalise_email(value)
    if not is_email_address(email):
        raise PydanticCustomError(EMAIL_INVALID, "email is not an e-mail address")
    return email


#: An e-mail address, normalised once validated.
EmailAddress = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(_email_address)]

#: The most requests one page of ``GET /admin/dsr`` lists.
MAX_LISTING_PAGE = 1000

#: The error type of an ``after`` naming no request, and its fixed text (never the value).
AFTER_UNKNOWN = "after_unknown"
AFTER_UNKNOWN_SAID = "after names no request: list from the start again"

#: The error type of a reason that is only blanks; its message is our own fixed text.
REASON_BLANK = "reason_blank"


def _said(value: str) -> str:
    """``value`` if it says anything: a reason of blanks alone is the field's fault (422),
    not one of the request's state (the 409 the service's refusal becomes)."""
    if not value.strip():
        raise PydanticCustomError(REASON_BLANK, "reason is blank: say why")
    return value


#: An operator's reason for a decision on a request (recorded redacted, and audited).
Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_said)]


class ResyncRequest(BaseModel):
    """Trigger a resync of one source system, or of one person in it."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, max_length=64)
    email: EmailAddress | None = None
    full: bool = False


class DsrCreate(BaseModel):
    """Open a data subject request."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["erase", "access"]
    email: EmailAddress


class DsrExtend(BaseModel):
    """Extend a request's deadline (Art. 12(3)), as ``dsr extend`` does."""

    model_config = ConfigDict(extra="forbid")

    months: int = Field(ge=1, le=2)
    reason: Reason


class DsrExempt(BaseModel):
    """Close one system's part of a request without carrying it out, as ``dsr exempt`` does."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, max_length=64)
    reason: Reason


class DsrRelease(BaseModel):
    """Let an erasure reach a system an earlier erasure of the person exempted, as ``dsr
    release`` does."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, max_length=64)


class Queued(BaseModel):
    """A job was queued; poll ``GET /admin/jobs/{job_id}``."""

    job_id: int
    status: str = "queued"


class Refusal(BaseModel):
    """Why a request was refused or not carried out, never repeating what was sent."""

    detail: str


class StoreUnavailable(BaseModel):
    """The store failed under the request; nothing was done: try again after ``Retry-After``."""

    error: str


class JobView(BaseModel):
    """A job's public state (never its parameters)."""

    id: int
    kind: str
    status: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None


#: Pydantic error types whose message is built from the schema alone (the field's limits, the
#: values a literal allows), never from the value sent, and our own fixed ones. Any other type
#: (``value_error`` and ``union_tag_invalid`` quote what was sent, custom errors say anything)
#: gets a fixed message.
_SCHEMA_ONLY_MESSAGES = frozenset(
    {
        AFTER_UNKNOWN,
        EMAIL_INVALID,
        REASON_BLANK,
        "bool_parsing",
        "bool_type",
        "dict_type",
        "enum",
        "extra_forbidden",
        "float_parsing",
        "float_type",
        "greater_than",
        "greater_than_equal",
        "int_from_float",
        "int_parsing",
        "int_parsing_size",
        "int_type",
        "json_invalid",
        "json_type",
        "less_than",
        "less_than_equal",
        "list_type",
        "literal_error",
        "missing",
        "model_attributes_type",
        "model_type",
        "string_pattern_mismatch",
        "string_too_long",
        "string_too_short",
        "string_type",
        "too_long",
        "too_short",
    }
)

#: A location part that can be a field name. An unexpected key is the client's own text (it
#: could be an e-mail address sent as a key): anything else is shown as ``<key>``.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _safe_loc(loc: Sequence[Any]) -> list[str | int]:
    """``loc`` with every part that cannot be a field name or an index masked."""
    return [
        part if isinstance(part, int) or _FIELD_NAME.fullmatch(str(part)) else "<key>"
        for part in loc
    ]


def _safe_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error as location, type and message: no ``input``, no ``ctx``."""
    kind = str(error.get("type", "invalid"))
    message = str(error.get("msg", "")) if kind in _SCHEMA_ONLY_MESSAGES else "Invalid value"
    return {"loc": _safe_loc(error.get("loc", ())), "type": kind, "msg": message}


async def validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each refused field's location, error type and message, never its value.

    FastAPI's own handler repeats every refused value (``input``) and pydantic's ``ctx``: an
    e-mail sent without ``system``, or a ``phone`` key the model forbids, came back in the
    answer, and from there into proxies' and scripts' logs. Same ``detail`` shape otherwise,
    so scripts read it as before.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(
        {"detail": [_safe_error(error) for error in errors]},
        status_code=422,  # by number: the constant's name changed across Starlette versions
    )


#: The largest request body the admin API reads; its requests are a few short fields.
MAX_ADMIN_BODY_BYTES = 65_536
OPENAPI_PATH = "/admin/openapi.json"

#: The one media type the admin API reads a body as.
JSON_MEDIA_TYPE = "application/json"
#: The methods whose body the admin API reads.
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _declared_json(headers: Mapping[bytes, bytes]) -> bool:
    """Whether a request's ``Content-Type`` is JSON (``application/json`` or a
    ``+json`` type), as FastAPI judges it before it parses a body."""
    media_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
    main, _, sub = media_type.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


#: The name the OpenAPI document gives the bearer token every route needs.
BEARER_SCHEME = "bearer"


def _refusal(description: str) -> dict[str, Any]:
    """A refusal as a route's ``responses`` documents it (a :class:`Refusal`)."""
    return {"model": Refusal, "description": description}


#: What any route may answer besides its own outcomes, as :class:`_Guard` and the store
#: handler answer them: documented, a client made from the schema knows them.
_EVERY_ROUTE_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: _refusal("Missing or wrong bearer token"),
    413: _refusal("Request body past 64 KiB"),
    503: {"model": StoreUnavailable, "description": "The store did not answer; try again"},
}
#: What a route that reads a body answers besides: a body not declared JSON.
_BODY_ANSWERS: dict[int | str, dict[str, Any]] = {
    415: _refusal(f"Body not sent as {JSON_MEDIA_TYPE}"),
}
#: What a decision on a request answers besides (``_decide`` in :func:`build_admin_app`).
_DECISION_ANSWERS: dict[int | str, dict[str, Any]] = {
    **_BODY_ANSWERS,
    404: _refusal("No such request"),
    409: _refusal("The request's state refuses the decision (the detail says why)"),
}


def _with_bearer(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app``'s OpenAPI document builder, the document saying every route takes a bearer
    token: the token is checked by :class:`_Guard`, out of FastAPI's sight, so its document
    said nothing of it and a client made from the schema sent none."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # made once, then kept by FastAPI: changed once here
        document.setdefault("components", {})["securitySchemes"] = {
            BEARER_SCHEME: {"type": "http", "scheme": "bearer"}
        }
        document["security"] = [{BEARER_SCHEME: []}]
        return document

    return openapi


_Scope = dict[str, Any]
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Guard:
    """The bearer token checked, then the body read up to :data:`MAX_ADMIN_BODY_BYTES` (and
    refused 415 unless declared JSON), before the app sees the request.

    An ASGI layer and not a FastAPI dependency: FastAPI reads and parses a request's body
    before it runs any dependency, so any caller who reached the port made the daemon take
    in whatever it sent before being told 401. The OpenAPI document needs no token.
    """

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], token: bytes):
        self.app = app
        self.token = token

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope["path"] == OPENAPI_PATH:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if (
            not self.token  # an empty token (config refuses one; code may not) opens nothing
            or scheme.lower() != b"bearer"
            or not hmac.compare_digest(given, self.token)
        ):
            detail = (
                "missing or wrong bearer token"
                if self.token
                else "admin API disabled: no admin_token"
            )
            await _answer(send, 401, detail, [(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_ADMIN_BODY_BYTES:
            await _answer(send, 413, "request body too large")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > MAX_ADMIN_BODY_BYTES:
                await _answer(send, 413, "request body too large")
                return
        if body and scope["method"] in _WITH_BODY and not _declared_json(headers):
            # FastAPI reads any other type as bytes, and its 422 ("Input should be a valid
            # dictionary") told the operator whose `curl -d` sent a JSON object as a form
            # that the object was not one. The type is what is wrong (RFC 9110 15.5.16).
            await _answer(
                send,
                415,
                f"the request body must be JSON: send it as Content-Type: {JSON_MEDIA_TYPE}",
                [(b"accept-post", JSON_MEDIA_TYPE.encode())],
            )
            return
        taken = False

        async def replay() -> dict[str, Any]:
            nonlocal taken
            if taken:
                return await receive()
            taken = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _answer(
    send: _Send, code: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_admin_app(daemon: Daemon) -> FastAPI:
    """The admin API bound to ``daemon``."""
    configured = daemon.rt.config.daemon.admin_token
    token = configured.get_secret_value().encode() if configured is not None else b""

    async def store_failed(request: Request, exc: Exception) -> Response:
        # A full disk, say: a 503 saying so (not a bare 500), and the log says what to do.
        assert isinstance(exc, sqlite3.Error)
        if not daemon.store_at_fault(exc):
            raise exc  # a bug, a 500 as any other: trying again would meet it again
        daemon.store_failed(exc, f"admin {request.method} {request.url.path}")
        from connector.httpapp import store_unavailable

        return store_unavailable()

    # Every route needs the token (_Guard); the OpenAPI document is served without it.
    app = FastAPI(
        title="klantsync admin API",
        version="1",
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
        responses=_EVERY_ROUTE_ANSWERS,
        exception_handlers={
            RequestValidationError: validation_failed,
            sqlite3.Error: store_failed,
        },
    )

    @app.post(
        "/admin/resync",
        status_code=202,
        response_model=Queued,
        responses={
            **_BODY_ANSWERS,
            404: _refusal("No such system"),
            409: _refusal("No flow has this system as source"),
        },
    )
    async def resync(body: ResyncRequest) -> Queued:
        """Queue a resync of a source system (optionally one person, optionally full)."""
        if body.system not in daemon.rt.config.systems:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such system")
        if not any(f.source == body.system for f in daemon.rt.config.flows):
            raise HTTPException(status.HTTP_409_CONFLICT, "no flow has this system as source")
        params: dict[str, Any] = {"system": body.system, "full": body.full}
        subject_id = None
        if body.email is not None:
            params["email"] = body.email
            subject_id = daemon.rt.keyring.subject_id(body.email)
        from connector import audit

        def queue() -> int:
            # One transaction: a job queued is a job recorded, and no entry without its job.
            with daemon.rt.store.transaction():
                job_id = daemon.queue("resync", params)
                audit.record_resync(
                    daemon.rt.store,
                    body.system,
                    full=body.full,
                    source="admin",
                    subject_id=subject_id,
                )
            return job_id

        return Queued(job_id=await daemon.jobs.in_turn(queue))

    @app.get("/admin/status", response_model=dict[str, Any])
    async def admin_status() -> Response:
        """Flows, queues, readiness, recent jobs and open requests."""
        ready, checks = daemon.readiness()
        running = {name: lock.locked() for name, lock in daemon.flow_locks.items()}
        read = admin_reads.status_body(daemon.rt.config, ready, checks, running, daemon.now())
        # Off the loop: the exact counts of a million people held every webhook and probe.
        body = await admin_reads.off_the_loop(daemon.rt.store.path, read)
        return Response(body, media_type=JSON_MEDIA_TYPE)

    @app.get(
        "/admin/jobs/{job_id}", response_model=JobView, responses={404: _refusal("No such job")}
    )
    async def job(job_id: JobId) -> JobView:
        """One job's state."""
        found = jobs.get(daemon.rt.store, job_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        return JobView(**found.as_dict())

    @app.post("/admin/dsr", status_code=202, response_model=Queued, responses=_BODY_ANSWERS)
    async def open_request(body: DsrCreate) -> Queued:
        """Open an erasure or access request; it runs in the background."""
        # An erasure is recorded and the person suppressed before the 202, and the request
        # is on disk then: the operator who was told "queued" does not ask again.
        return Queued(job_id=await daemon.queue_request(body.kind, body.email))

    @app.get(
        "/admin/dsr",
        response_model=list[dict[str, Any]],
        responses={
            200: {
                "description": "The requests, oldest first; a page of them with `limit`",
                "headers": {
                    "Link": {
                        "description": (
                            'The next page, `<...>; rel="next"` (relative to this host), '
                            "where there is one"
                        ),
                        "schema": {"type": "string"},
                    }
                },
            }
        },
    )
    async def list_requests(
        request: Request,
        open_only: bool = False,
        overdue: bool = False,
        limit: Annotated[int | None, Query(ge=1, le=MAX_LISTING_PAGE)] = None,
        after: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> Response:
        """Data subject requests (subject ids only), oldest first: every one, or (with
        ``limit``) a page, the next one named by the ``Link`` header (``after`` the last
        request shown). ``overdue``: the open ones past their deadline."""
        from connector.dsr_views import UnknownCursorError

        read = admin_reads.request_page(
            daemon.now(), open_only=open_only, overdue=overdue, after=after, limit=limit
        )
        try:
            # Off the loop: years of requests held every webhook and probe while listed.
            found = await admin_reads.off_the_loop(daemon.rt.store.path, read)
        except UnknownCursorError:
            raise RequestValidationError(
                [{"loc": ("query", "after"), "type": AFTER_UNKNOWN, "msg": AFTER_UNKNOWN_SAID}]
            ) from None
        headers = {}
        if found.next_after is not None:
            # A relative reference: behind a TLS-terminating proxy the scheme and host this
            # listener sees are not the ones the caller used.
            following = request.url.include_query_params(after=found.next_after)
            headers["link"] = f'<{following.path}?{following.query}>; rel="next"'
        return Response(found.body, media_type=JSON_MEDIA_TYPE, headers=headers)

    @app.get("/admin/dsr/{request_id}", responses={404: _refusal("No such request")})
    async def show_request(request_id: str) -> dict[str, Any]:
        """One data subject request."""
        from connector.dsr import DsrService

        if len(request_id) > 64:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such request")
        view = DsrService(daemon.rt).get(request_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such request")
        shown: dict[str, Any] = view.as_dict()
        return shown

    @app.post("/admin/dsr/{request_id}/extend", responses=_DECISION_ANSWERS)
    async def extend_request(request_id: str, body: DsrExtend) -> dict[str, Any]:
        """Extend an open request's deadline, with the reason (redacted, audited)."""
        return await _decide(request_id, lambda s: s.extend(request_id, body.months, body.reason))

    @app.post("/admin/dsr/{request_id}/exempt", responses=_DECISION_ANSWERS)
    async def exempt_part(request_id: str, body: DsrExempt) -> dict[str, Any]:
        """Close one system's part of an open request without carrying it out, with the
        reason the person is told (redacted, audited; the receipt names it)."""
        return await _decide(request_id, lambda s: s.exempt(request_id, body.system, body.reason))

    @app.post("/admin/dsr/{request_id}/release", responses=_DECISION_ANSWERS)
    async def release_part(request_id: str, body: DsrRelease) -> dict[str, Any]:
        """Let an open erasure reach a system whose part it holds because an earlier erasure
        of the person exempted that system (audited); its next retry erases there."""
        return await _decide(request_id, lambda s: s.release(request_id, body.system))

    async def _decide(
        request_id: str, decision: Callable[[DsrService], RequestView]
    ) -> dict[str, Any]:
        """Run an operator's decision on a request: 404 for no such request, 409 for one the
        request's state refuses (what the CLI exits 2 for, saying why), else the request.

        Each decision is one write transaction, made again whole while another process holds
        the store's lock, without the event loop waiting (``in_turn``): it waited inside
        SQLite's busy timeout on the loop, every probe and webhook with it."""
        from connector.dsr import DsrService, DsrUsageError

        service = DsrService(daemon.rt)
        if len(request_id) > 64 or service.get(request_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such request")
        try:
            view = await daemon.jobs.in_turn(lambda: decision(service))
        except DsrUsageError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        shown: dict[str, Any] = view.as_dict()
        return shown

    # FastAPI's documented way to change the document is to replace the method.
    app.openapi = _with_bearer(app)  # type: ignore[method-assign]
    app.add_middleware(_Guard, token=token)
    # No redirect to the path with or without a trailing slash: behind a TLS-terminating
    # proxy it pointed at http:// (the scheme the listener sees).
    app.router.redirect_slashes = False
    return app
