"""The web workspace's ASGI app: routes, sessions and CSRF, errors, security headers.

Everything is a call of :class:`uns.review.workspace.Workspace`; this module turns HTTP
into those calls and their errors into status codes (the permission checks are in one
place, :mod:`uns.users.roles`, and run in the library):

| error | status |
|---|---|
| :class:`~uns.errors.UserError` (a bad input; ``field`` names it) | 400 |
| :class:`~uns.errors.AuthenticationError` (no session, wrong password) | 401 |
| :class:`~uns.errors.PermissionDenied` (a role; a missing CSRF token) | 403 |
| unknown batch | 404 |
| :class:`~uns.errors.ReviewRefused` (``rule`` names the rule) | 409 |
| a body that is not JSON | 415 |
| :class:`~uns.errors.AccountLocked` | 423 |

Every response carries a Content-Security-Policy that allows nothing but this server
(``default-src 'self'``), and no page asks another host for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uns.errors import (
    AccountLocked,
    AuthenticationError,
    BatchError,
    PermissionDenied,
    ReviewRefused,
    UnsError,
    UserError,
)
from uns.review.workspace import Workspace
from uns.users.sessions import Session

__all__ = ["COOKIE", "CSP", "body", "create_app", "error_status", "session_of", "threaded"]

log = logging.getLogger("uns.web")

COOKIE: Final = "uns_session"
#: the pages: this server only, no inline script or style, no framing
CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: the largest request body read (a disposition's comment is at most 4000 characters)
MAX_BODY: Final = 64 * 1024
STATIC: Final = Path(__file__).resolve().parent / "static"


def error_status(exc: UnsError) -> int:
    """The HTTP status of a library error (the table of the module doc)."""
    if isinstance(exc, AccountLocked):
        return 423
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, ReviewRefused):
        return 409
    if isinstance(exc, BatchError) and str(exc).startswith("unknown batch"):
        return 404
    if isinstance(exc, UserError):
        return 400
    from uns.users.ldap import DirectoryUnavailable  # noqa: PLC0415

    if isinstance(exc, DirectoryUnavailable):
        return 503
    return 500


def error_body(exc: UnsError) -> dict[str, Any]:
    out: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, ReviewRefused):
        out["rule"] = exc.rule
    if isinstance(exc, UserError) and exc.field:
        out["field"] = exc.field
    if isinstance(exc, AccountLocked):
        out["locked_until_us"] = exc.until_us
    return out


async def threaded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a library call (blocking: lake reads, argon2, Delta commits) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


async def session_of(request: Request, *, csrf: bool | None = None) -> Session:
    """The request's session (AuthenticationError without one).  A state-changing request
    (``csrf``: default for anything but GET and HEAD) must carry its ``X-CSRF-Token``."""
    ws = workspace(request)
    session: Session | None = await threaded(ws.access.session, request.cookies.get(COOKIE))
    if session is None:
        raise AuthenticationError("not logged in (or the session ended): log in")
    if (request.method not in ("GET", "HEAD") if csrf is None else csrf) and not session.csrf_ok(
        request.headers.get("x-csrf-token")
    ):
        raise PermissionDenied("the request lacks this session's X-CSRF-Token", action="csrf")
    return session


async def body(request: Request) -> dict[str, Any]:
    """The request's JSON object (at most :data:`MAX_BODY` bytes); UserError otherwise."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _UnsupportedMedia()
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise UserError(f"the request body is larger than {MAX_BODY} bytes")
    try:
        value = json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UserError("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise UserError("the request body must be a JSON object")
    return value


class _UnsupportedMedia(UserError):
    def __init__(self) -> None:
        super().__init__("the request body must be JSON (Content-Type: application/json)")


def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnsError)
    status = 415 if isinstance(exc, _UnsupportedMedia) else error_status(exc)
    if status == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(exc), status_code=status)


class SecurityHeaders:
    """Adds the security headers to every response (a page may set its own CSP)."""

    def __init__(self, app: ASGIApp, *, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
                if self.secure:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(ws: Workspace, *, secure_cookies: bool = False) -> Starlette:
    """The workspace's app over ``ws``; ``secure_cookies`` when served over TLS (itself or a proxy)."""
    from uns.web.api import api_routes  # noqa: PLC0415
    from uns.web.pages import page_error, page_routes  # noqa: PLC0415

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_end_idle_sessions(ws), name="uns-web-idle-sessions")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def on_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return _api_error(request, exc)
        return await page_error(request, exc)

    routes = [*api_routes(), *page_routes(), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    app = Starlette(routes=routes, exception_handlers={UnsError: on_error}, lifespan=lifespan)
    app.state.workspace = ws
    app.state.secure_cookies = secure_cookies
    app.add_middleware(SecurityHeaders, secure=secure_cookies)
    return app


async def _end_idle_sessions(ws: Workspace) -> None:
    """End idle sessions (each an idle_logout entry) a few times per idle period."""
    period = min(max(ws.cfg.web.session_idle_s / 4, 0.5), 30.0)
    while True:
        await asyncio.sleep(period)
        try:
            await threaded(ws.access.end_idle)
        except UnsError as exc:  # the lake could not be written: said, and tried again
            log.warning("ending idle sessions: %s", exc)


Handler = Callable[[Request], Awaitable[Response]]


def route(path: str, handler: Handler, methods: list[str]) -> Route:
    return Route(path, handler, methods=methods)
