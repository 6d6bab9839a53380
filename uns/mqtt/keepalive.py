"""MQTT keepalive for one connection: ping when quiet, give up when the broker is silent.

The broker drops a client it has not heard from for 1.5 x keepalive; we ping
when we sent nothing for keepalive/2.  The other way round, a broker we have
not heard from for 1.5 x keepalive (not even a PINGRESP) is taken as gone,
which notices a hung broker or a dead network path that TCP alone would not
report for minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from uns.mqtt.outbound import Outbox
from uns.mqtt.wire import PINGREQ_PACKET

__all__ = ["keep_alive"]


async def keep_alive(
    outbox: Outbox,
    keepalive: int,
    *,
    bytes_received: Callable[[], int],
    current: Callable[[], bool],
    fail: Callable[[str], None],
) -> None:
    """Run while ``current()`` (the connection is still the client's); ``fail`` ends it.

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
        if bytes_received() != bytes_seen:
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
