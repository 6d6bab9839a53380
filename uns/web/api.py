"""The review's JSON API (docs/contracts.md; ``schemas/web-api.openapi.json``): the pages
use it too.  Each handler is a library call; errors become statuses in :mod:`uns.web.app`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uns.errors import UserError
from uns.review.context import set_batch_context
from uns.review.listing import batch_list
from uns.review.signing import sign_review
from uns.users.manage import list_users, unlock_user
from uns.users.roles import require
from uns.web.http import COOKIE, body, session_of, threaded, workspace

__all__ = ["api_routes", "login_response", "session_json"]


def session_json(session: Any) -> dict[str, Any]:
    who = session.identity
    return {
        "user": who.user,
        "full_name": who.full_name,
        "roles": list(who.roles),
        "csrf_token": session.csrf,
    }


def login_response(request: Request, token: str, session: Any) -> JSONResponse:
    """200 with the session (and its CSRF token), and the HttpOnly, SameSite=Strict cookie."""
    response = JSONResponse(session_json(session))
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.secure_cookies, path="/"
    )
    return response


async def post_session(request: Request) -> Response:
    ws = workspace(request)
    data = await body(request)
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not username.strip():
        raise UserError("the user name is required", field="username")
    if not isinstance(password, str) or not password:
        raise UserError("the password is required", field="password")
    remote = request.client.host if request.client else ""
    token, session = await threaded(ws.access.login, username, password, remote=remote)
    return login_response(request, token, session)


async def get_session(request: Request) -> Response:
    return JSONResponse(session_json(await session_of(request)))


async def delete_session(request: Request) -> Response:
    session = await session_of(request)
    await threaded(workspace(request).access.logout, session)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response


def _flag(value: str | None, name: str) -> bool | None:
    if value in (None, ""):
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise UserError(f"{name} must be true or false", field=name)


def batch_filters(request: Request) -> dict[str, Any]:
    """The filters of the batch list from the query string (also the page's form)."""
    q = request.query_params
    return {
        "since": q.get("since") or None,
        "product": q.get("product") or None,
        "status": q.get("status") or None,
        "review_state": q.get("review_state") or None,
        "open_exceptions": _flag(q.get("open_exceptions"), "open_exceptions"),
    }


async def get_batches(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    rows = await threaded(batch_list, workspace(request), **batch_filters(request))
    return JSONResponse(rows)


async def get_report(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    report = await threaded(workspace(request).report, request.path_params["batch_id"])
    return JSONResponse(report)


async def get_audit(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    return JSONResponse(await threaded(workspace(request).audit, request.path_params["batch_id"]))


async def post_disposition(request: Request) -> Response:
    session = await session_of(request)
    data = await body(request)
    return JSONResponse(
        await threaded(workspace(request).dispose, session, request.path_params["batch_id"], data)
    )


async def post_signature(request: Request) -> Response:
    session = await session_of(request)
    data = await body(request)
    ws = workspace(request)
    return JSONResponse(await threaded(sign_review, ws, session, request.path_params["batch_id"], data))


async def post_context(request: Request) -> Response:
    session = await session_of(request)
    data = await body(request)
    result = await threaded(
        set_batch_context, workspace(request), session, request.path_params["batch_id"], data
    )
    return JSONResponse(result)


async def get_users(request: Request) -> Response:
    session = await session_of(request)
    ws = workspace(request)
    require(session.identity.user, session.identity.roles, "manage_users")
    return JSONResponse(await threaded(list_users, ws.users, ws.access.now_us()))


async def post_unlock(request: Request) -> Response:
    session = await session_of(request)
    data = await body(request)
    ws = workspace(request)
    require(session.identity.user, session.identity.roles, "manage_users")
    reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
    await threaded(
        unlock_user, ws.users, request.path_params["user"], reason=reason, actor=session.identity.user
    )
    return Response(status_code=204)


def api_routes() -> list[Route]:
    return [
        Route("/api/session", post_session, methods=["POST"]),
        Route("/api/session", get_session, methods=["GET"]),
        Route("/api/session", delete_session, methods=["DELETE"]),
        Route("/api/batches", get_batches, methods=["GET"]),
        Route("/api/batches/{batch_id}/report", get_report, methods=["GET"]),
        Route("/api/batches/{batch_id}/audit", get_audit, methods=["GET"]),
        Route("/api/batches/{batch_id}/dispositions", post_disposition, methods=["POST"]),
        Route("/api/batches/{batch_id}/signatures", post_signature, methods=["POST"]),
        Route("/api/batches/{batch_id}/context", post_context, methods=["POST"]),
        Route("/api/users", get_users, methods=["GET"]),
        Route("/api/users/{user}/unlock", post_unlock, methods=["POST"]),
    ]
