"""The workspace's pages: server-rendered Jinja2 (autoescaped), with one script of our own
(``static/app.js``) that sends the forms to the JSON API and shows its errors next to the
field they name.  Each page is the JSON API's twin: the same library calls."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from uns.batch.api import report_file_name
from uns.batch.review import STATES
from uns.errors import AuthenticationError, UnsError
from uns.review.listing import batch_list
from uns.users.roles import allowed, require
from uns.web.api import batch_filters
from uns.web.http import error_body, error_status, session_of, threaded, workspace

__all__ = ["page_error", "page_routes"]

log = logging.getLogger("uns.web")

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value is escaped, whatever the template's name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["num"] = lambda v: "–" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
templates = Jinja2Templates(env=_ENV)
#: the report's own CSP: its styles are inline, it has no script and asks nothing of anyone
REPORT_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


#: the actions a page shows a control for (when the user's roles allow it)
_SHOWN: Final = ("dispose", "set_context", "manage_users", "sign:reviewed", "sign:approved", "sign:rejected")


def _page(request: Request, name: str, session: Any, status: int = 200, **context: Any) -> Response:
    who = session.identity if session is not None else None
    can = {action: who is not None and allowed(who.roles, action) for action in _SHOWN}
    return templates.TemplateResponse(
        request, name, {"session": session, "who": who, "can": can, **context}, status_code=status
    )


async def login_page(request: Request) -> Response:
    target = request.query_params.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # only this server's pages: no open redirect
    ended = request.query_params.get("ended") == "1"
    return _page(request, "login.html", None, next=target, ended=ended)


async def batches_page(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    filters = batch_filters(request)
    rows = await threaded(batch_list, workspace(request), **filters)
    return _page(request, "batches.html", session, rows=rows, filters=filters, states=STATES)


async def batch_page(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    ws = workspace(request)
    batch_id = request.path_params["batch_id"]
    report = await threaded(ws.report, batch_id)
    trail = await threaded(ws.audit, batch_id)
    by_id = {d["exception_id"]: d for d in report["review"]["dispositions"]}
    return _page(request, "batch.html", session, r=report, b=report["batch"], review=report["review"],
                 dispositions=by_id, trail=trail)  # fmt: skip


async def report_file(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "view")
    fmt = request.path_params["fmt"]
    batch_id = request.path_params["batch_id"]
    data = await threaded(workspace(request).report_file, session, batch_id, fmt)
    if fmt == "pdf":
        name = quote(report_file_name(batch_id, "pdf"))  # a batch id is anyone's text: a plain name
        return Response(data, media_type="application/pdf",
                        headers={"content-disposition": f"attachment; filename*=UTF-8''{name}"})  # fmt: skip
    return Response(
        data, media_type="text/html; charset=utf-8", headers={"content-security-policy": REPORT_CSP}
    )


async def users_page(request: Request) -> Response:
    session = await session_of(request)
    require(session.identity.user, session.identity.roles, "manage_users")
    from uns.users.manage import list_users  # noqa: PLC0415

    ws = workspace(request)
    users = await threaded(list_users, ws.users, ws.access.now_us())
    return _page(request, "users.html", session, users=users)


async def page_error(request: Request, exc: Exception) -> Response:
    """A page's error: to the log-in page without a session, else a page saying what."""
    assert isinstance(exc, UnsError)
    if isinstance(exc, AuthenticationError):
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="/")
        ended = "&ended=1" if request.cookies.get("uns_session") else ""
        return RedirectResponse(f"/login?next={target}{ended}", status_code=303)
    status = error_status(exc)
    if status == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    try:
        return _page(request, "error.html", None, status=status, status_code=status, error=error_body(exc))
    except jinja2.TemplateError:  # pragma: no cover - the error page itself failed
        return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", status_code=status)


def page_routes() -> list[Route]:
    return [
        Route("/", batches_page, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/batches/{batch_id}", batch_page, methods=["GET"]),
        Route("/batches/{batch_id}/report.{fmt:str}", report_file, methods=["GET"]),
        Route("/users", users_page, methods=["GET"]),
    ]
