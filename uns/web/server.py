"""``uns serve``: the review workspace over uvicorn (HTTP/1.1; TLS itself or behind a proxy)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from uns.config import Config
from uns.config_web import parse_listen
from uns.review.workspace import Workspace, open_workspace
from uns.web.app import create_app

__all__ = ["serve"]

log = logging.getLogger("uns.web")


def serve(
    cfg: Config,
    *,
    sockets: list[socket.socket] | None = None,
    started: Callable[[Workspace, Any], None] | None = None,
) -> None:
    """Serve the workspace of ``cfg`` until SIGINT/SIGTERM (or ``server.should_exit``).
    UnsError, before anything listens, when it cannot serve (no signing key, ...).
    ``sockets``: listen on these instead of ``web.listen``; ``started(workspace, server)`` is
    called once the workspace is open (tests stop the server through it)."""
    web = cfg.web
    host, port = parse_listen(web.listen, "web.listen")
    with open_workspace(cfg) as ws:
        app = create_app(ws, secure_cookies=bool(web.tls_cert) or web.behind_proxy)
        config = uvicorn.Config(
            app,
            host=host or "0.0.0.0",  # noqa: S104 - an empty host in web.listen means every interface
            port=port,
            ssl_certfile=web.tls_cert,
            ssl_keyfile=web.tls_key,
            proxy_headers=web.behind_proxy,
            forwarded_allow_ips="127.0.0.1" if web.behind_proxy else None,
            server_header=False,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=16 * 1024,  # request line and headers are bounded
            log_level="warning",
        )
        server = uvicorn.Server(config)
        if started is not None:
            started(ws, server)
        scheme = "https" if web.tls_cert else "http"
        where = f"{scheme}://{host or '*'}:{port}" if sockets is None else "the given sockets"
        log.warning("uns serve: the review workspace of %s on %s", cfg.lake.path, where)
        server.run(sockets=sockets)
