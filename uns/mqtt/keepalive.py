"""MQTT keepalive for one connection: ping when quiet, give up when the broker is silent.

The broker drops a client it has not heard from for 1.5 x keepalive; we ping
when we sent nothing for keepalive/2.  The other way round, a broker we have
not heard from for 1.5 x keepalive (not even a PINGRESP) is taken as gone,
which notices a hung broker or a dead network path that TCP alone would not
report for minutes.

Except while the client itself has paused reading the socket (back-pressure:
the engine cannot take more messages, e.g. its lake's disk is full): then the
broker's PINGRESPs wait in the TCP stream behind the PUBLISHes we do not read,
so its silence says nothing.  We keep pinging -- the broker hears from us and
keeps the session however long the pause -- and a dead peer is noticed by TCP
instead: the socket's ``TCP_USER_TIMEOUT`` (:func:`bound_unacknowledged`)
closes it when our PINGREQs stay unacknowledged for 1.5 x keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from uns.mqtt.outbound import Outbox
from uns.mqtt.wire import PINGREQ_PACKET

__all__ = ["bound_unacknowledged", "keep_alive"]


def bound_unacknowledged(sock: socket.socket | None, keepalive: int) -> None:
    """Linux ``TCP_USER_TIMEOUT``: the kernel closes the connection when data we sent stays
    unacknowledged by the peer's TCP for 1.5 x keepalive (no-op where not supported)."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None or keepalive <= 0:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(keepalive * 1500))


async def keep_alive(
    outbox: Outbox,
    keepalive: int,
    *,
    bytes_received: Callable[[], int],
    current: Callable[[], bool],
    fail: Callable[[str], None],
    reading_paused: Callable[[], bool] = lambda: False,
) -> None:
    """Run while ``current()`` (the connection is still the client's); ``fail`` ends it.
    While ``reading_paused()`` the broker's silence is not held against it (see above).

    Activity is sampled on a timer (the client's byte counter and the outbox's
    ``sent_any`` flag), so the hot paths never read the clock."""
    tick = keepalive / 4
    now = time.monotonic()
    last_read = last_write = ping_sent = now
    bytes_seen = bytes_received()
    outbox.sent_any = False
    while current():
        await asyncio.sleep(tick)
        now = time.monotonic()
        if bytes_received() != bytes_seen or reading_paused():
            bytes_seen = bytes_received()
            last_read = now
        if outbox.sent_any:
            outbox.sent_any = False
            last_write = now
        if now - last_read >= keepalive * 1.5:
            fail(f"no PINGRESP within {keepalive * 1.5:g} s")
            return
        # a ping when we sent nothing for a while (the broker wants to hear from us) or
        # heard nothing (is the broker still there?) -- one at a time for the latter
        read_quiet = now - last_read >= keepalive / 2 and ping_sent < last_read
        if now - last_write >= keepalive / 2 or read_quiet:
            if outbox.transport.is_closing():
                return
            outbox.write(PINGREQ_PACKET)
            ping_sent = last_write = now
