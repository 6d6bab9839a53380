"""Logging for a process that must not flood its log: one line per key and interval, as
text or as JSON lines (``engine.log_format``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["JsonFormatter", "RateLimitedLog", "setup_logging"]


class RateLimitedLog:
    """Logs at most one line per key per ``interval`` seconds, counting the rest."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, key, msg, args, exc_info=False)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self._log(logging.ERROR, key, msg, args, exc_info=False)

    def exception(self, key: str, msg: str, *args: Any) -> None:
        """An error with the traceback of the exception being handled."""
        self._log(logging.ERROR, key, msg, args, exc_info=True)

    def _log(self, level: int, key: str, msg: str, args: tuple[Any, ...], *, exc_info: bool) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 10_000:  # bound memory for a flood of distinct sources
            self._last.clear()
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        suffix = f" ({more} similar suppressed)" if more else ""
        self._logger.log(level, msg + suffix, *args, exc_info=exc_info)


#: attributes every LogRecord has: what is not among them was passed as ``extra=``
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601 with ms), ``level``, ``logger``,
    ``message``, then the fields passed with ``extra=`` and ``exception`` (the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str, log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """The root logger at ``level``, writing ``text`` lines or ``json`` objects to ``stream``
    (stderr); replaces handlers set before.  Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
