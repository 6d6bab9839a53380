"""What the web face's handlers share: the session of a request and its CSRF check, the
JSON body, library calls off the event loop, and the HTTP status of each library error
(the table of :mod:`uns.web.app`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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

__all__ = [
    "COOKIE",
    "MAX_BODY",
    "api_error",
    "body",
    "error_body",
    "error_status",
    "session_of",
    "threaded",
    "workspace",
]

log = logging.getLogger("uns.web")

COOKIE: Final = "uns_session"
#: the largest request body read (a disposition's comment is at most 4000 characters)
MAX_BODY: Final = 64 * 1024


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


def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnsError)
    status = 415 if isinstance(exc, _UnsupportedMedia) else error_status(exc)
    if status == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(exc), status_code=status)
