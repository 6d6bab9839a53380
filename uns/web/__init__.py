"""The review workspace, the second face of uns (``uns serve``): an ASGI app (Starlette,
served by uvicorn) with server-rendered pages and the JSON API they use.

It holds no rule of its own: users, sessions, lockout, review state, dispositions and
signatures are library calls (:mod:`uns.users`, :mod:`uns.review`, :mod:`uns.batch`) a
test can reach without HTTP.  :mod:`uns.web.app` maps their errors to HTTP statuses and
adds the security headers, :mod:`uns.web.api` is the JSON API, :mod:`uns.web.pages` the
pages (``templates/``, ``static/``: everything from this server, nothing from elsewhere),
:mod:`uns.web.server` runs it.  docs/web.md describes it.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> object:  # the app and server load starlette and uvicorn on demand
    if name == "create_app":
        from uns.web.app import create_app  # noqa: PLC0415

        return create_app
    if name == "serve":
        from uns.web.server import serve  # noqa: PLC0415

        return serve
    raise AttributeError(name)
