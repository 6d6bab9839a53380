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
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uns.errors import UnsError
from uns.review.workspace import Workspace
from uns.web.api import api_routes
from uns.web.http import api_error, threaded
from uns.web.pages import page_error, page_routes

__all__ = ["CSP", "create_app"]

log = logging.getLogger("uns.web")

#: the pages: this server only, no inline script or style, no framing
CSP: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
STATIC: Final = Path(__file__).resolve().parent / "static"


class SecurityHeaders:
    """Adds the security headers to every response (a page may set its own CSP), and
    ``Server-Timing: app;dur=<ms>``: the time the server spent until the response began."""

    def __init__(self, app: ASGIApp, *, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                spent = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={spent:.1f}".encode()))
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
            return api_error(request, exc)
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
