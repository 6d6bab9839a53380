"""systemd notifications (``Type=notify``, ``WatchdogSec=``) without a dependency.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket; ``@name`` is in the abstract
namespace) and, with a watchdog, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``).  The
engine sends ``READY=1`` once its sinks are open, ``STATUS=`` lines saying whether it
is ready (and why not), ``WATCHDOG=1`` from its event loop at half the watchdog
interval (a stuck loop stops them and systemd restarts the service), and
``STOPPING=1`` on shutdown.  Without ``NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

from uns.engine.host import Engine
from uns.engine.readiness import Readiness

__all__ = ["Notifier", "systemd_notifications"]

log = logging.getLogger("uns.daemon")

#: seconds between STATUS= updates when no watchdog asks for more often
STATUS_INTERVAL_S = 5.0


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when not sent (no socket, or an error,
        logged once)."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notification to %r failed: %s", self.address, exc)
            self._failed = True
            return False
        return True


async def _notify_loop(notifier: Notifier, engine: Engine, readiness: Readiness, stop: asyncio.Event) -> None:
    """READY once the sinks are open, then the watchdog and STATUS until cancelled; STOPPING
    as soon as ``stop`` is set (the watchdog goes on while the engine flushes)."""
    interval = min(STATUS_INTERVAL_S, notifier.watchdog_s / 2) if notifier.watchdog_s else STATUS_INTERVAL_S
    shown = ""
    while True:
        lines = []
        if stop.is_set():
            status = "stopping: draining and flushing the lake"
            if shown != status:
                lines.append("STOPPING=1")
        elif not engine.running.is_set():
            status = "starting: opening the lake"
        else:
            ready, reasons = readiness.check()
            status = "ready" if ready else "not ready: " + "; ".join(reasons)
            if not shown.startswith(("ready", "not ready")):
                lines.append("READY=1")
        if status != shown:
            lines.append(f"STATUS={status}")
            shown = status
        if notifier.watchdog_s:
            lines.append("WATCHDOG=1")
        if lines:
            notifier.notify(*lines)
        # wake at once for the moments that matter (the sinks open, a stop), else each interval
        waits = [asyncio.ensure_future(e.wait()) for e in (stop, engine.running) if not e.is_set()]
        if not waits:
            await asyncio.sleep(interval)
            continue
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


@contextlib.asynccontextmanager
async def systemd_notifications(
    engine: Engine, readiness: Readiness, stop: asyncio.Event, notifier: Notifier | None = None
) -> AsyncIterator[Notifier]:
    """READY, STATUS, STOPPING and watchdog notifications while the body runs the engine."""
    notifier = notifier or Notifier()
    if not notifier.enabled:
        yield notifier
        return
    task = asyncio.create_task(_notify_loop(notifier, engine, readiness, stop), name="uns-systemd")
    try:
        yield notifier
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
