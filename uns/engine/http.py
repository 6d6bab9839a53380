"""The engine's HTTP endpoint (``engine.http_listen``): ``/metrics``, ``/healthz``, ``/readyz``.

A small HTTP/1.1 server on the engine's own event loop (``asyncio.start_server``),
so a scrape reads the counters between two turns of the receive loop, never while
a message is half processed, and takes no lock.  Each answer is built from
counters the engine keeps anyway (:mod:`uns.engine.metrics`); a scrape costs the
loop about a millisecond.  One request per connection (``Connection: close``);
requests are bounded (8 KiB of head, 5 s to send it).

- ``GET /sparkplug/births/<group>/<node>[/<device>]``: the last birth the engine holds of
  that edge node or device, JSON (what ``uns cmd`` checks a command against);
- ``GET /metrics``: Prometheus text format (prometheus-client's ``generate_latest``);
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` while the loop runs (a loop that is
  stuck cannot answer: the probe times out);
- ``GET /readyz``: 200 when ready, else 503; the JSON body lists the reasons
  (:class:`uns.engine.readiness.Readiness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from uns.config import parse_listen
from uns.engine.metrics import EngineMetrics
from uns.errors import EngineError
from uns.logs import RateLimitedLog

__all__ = ["HttpEndpoint"]

log = logging.getLogger("uns.http")

_HEAD_LIMIT = 8192  # bytes of request line and headers
_HEAD_TIMEOUT_S = 5.0
_JSON = "application/json"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HttpEndpoint:
    """Serves ``metrics`` on ``listen`` (``host:port``; port 0 picks a free one, see :attr:`port`)."""

    def __init__(self, listen: str, metrics: EngineMetrics) -> None:
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._started = time.monotonic()
        self._rlog = RateLimitedLog(log)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host or None, self.port, limit=_HEAD_LIMIT, reuse_address=True
            )
        except OSError as exc:
            raise EngineError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", self.host or "*", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HttpEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            try:
                status, content_type, body = self.answer(head)
            except Exception as exc:  # a bug in a collector costs this answer, not the engine
                self._rlog.exception("answer", "cannot answer %r: %s", head[:80], exc)
                status, content_type, body = 500, _JSON, _json({"error": f"{type(exc).__name__}: {exc}"})
            method = head.split(b" ", 1)[0]
            writer.write(_response(status, content_type, b"" if method == b"HEAD" else body, len(body)))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent too much: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request head (request line and headers)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, _JSON, _json({"error": "bad request line"})
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, _JSON, _json({"error": "only GET and HEAD"})
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if target == b"/healthz":
            uptime = round(time.monotonic() - self._started, 1)
            return 200, _JSON, _json({"status": "ok", "uptime_s": uptime})
        if target == b"/readyz":
            doc = self.metrics.readiness.document()
            return (200 if doc["ready"] else 503), _JSON, _json(doc)
        if target.startswith(_BIRTHS):
            return self._birth(target[len(_BIRTHS) :])
        paths = ["/metrics", "/healthz", "/readyz", "/sparkplug/births/<group>/<node>[/<device>]"]
        return 404, _JSON, _json({"error": "not found", "paths": paths})

    def _birth(self, rest: bytes) -> tuple[int, str, bytes]:
        """The last birth the engine holds of a node or device (what ``uns cmd`` checks against)."""
        parts = [urllib.parse.unquote(p.decode("ascii", "replace")) for p in rest.split(b"/")]
        if len(parts) not in (2, 3) or not all(parts):
            return 400, _JSON, _json({"error": "want /sparkplug/births/<group>/<node>[/<device>]"})
        born = self.metrics.engine.born(*parts)
        if born is None:
            return 404, _JSON, _json({"error": f"{'/'.join(parts)} is not known to this engine"})
        return 200, _JSON, _json(born)


_BIRTHS = b"/sparkplug/births/"


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def _response(status: int, content_type: str, body: bytes, length: int) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
