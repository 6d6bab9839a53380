"""A recording TCP proxy between a client under test and mosquitto: what the TCK's broker
extension sees.

The Sparkplug TCK runs inside HiveMQ and intercepts the host's CONNECT, SUBSCRIBE
and PUBLISH packets.  :class:`Wiretap` does the same in front of a real
mosquitto: the client connects to the tap's port, every byte is passed on both
ways, and each packet the client sends is parsed (with the project's codec,
3.1.1 or 5.0 as the CONNECT says) and recorded in order with the time it was
seen.  Mosquitto still does all the broker work (and checks the packets
independently: a malformed one ends the connection there).  :meth:`Wiretap.cut`
drops a connection the way a broker that forcibly disconnects a client would:
both sockets close without a DISCONNECT, so mosquitto publishes the client's Will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from uns.mqtt.wire import (
    CONNECT,
    DISCONNECT,
    PUBLISH,
    SUBSCRIBE,
    FrameReader,
    parse_connect,
    parse_connect5,
    parse_publish,
    parse_publish5,
    parse_subscribe,
    parse_subscribe5,
)


@dataclass
class Packet:
    """One packet a client sent, as the broker received it."""

    conn: int  # connection number through the tap, from 1
    kind: str  # CONNECT, SUBSCRIBE, PUBLISH, DISCONNECT, other packet names, or CLOSED
    at: float  # time.time() when seen
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return str(self.fields.get("topic", ""))

    def json(self) -> Any:
        return json.loads(self.fields["payload"])


_NAMES = {1: "CONNECT", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE"}
_NAMES |= {10: "UNSUBSCRIBE", 12: "PINGREQ", 14: "DISCONNECT", 15: "AUTH"}


class Wiretap:
    """``async with Wiretap(broker_port) as tap:`` then connect to ``tap.url``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.packets: list[Packet] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for conn in list(self._conns):
            self.cut(conn)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    # ------------------------------------------------------------------ what was seen
    def of(self, kind: str, conn: int | None = None) -> list[Packet]:
        return [p for p in self.packets if p.kind == kind and (conn is None or p.conn == conn)]

    def connection(self, conn: int) -> list[Packet]:
        return [p for p in self.packets if p.conn == conn]

    @property
    def connections(self) -> int:
        return self._count

    def client_connections(self, client_id: str) -> list[int]:
        return [p.conn for p in self.of("CONNECT") if p.fields["client_id"] == client_id]

    async def wait_for(self, what: Any, timeout: float = 20.0, description: str = "a packet") -> Packet:
        """The first packet for which ``what(packet)`` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for packet in self.packets:
                if what(packet):
                    return packet
            if time.monotonic() > deadline:
                seen = [(p.conn, p.kind, p.topic) for p in self.packets[-20:]]
                raise AssertionError(f"timed out waiting for {description}; last packets: {seen}")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ forcing a disconnect
    def cut(self, conn: int) -> None:
        """Drop connection ``conn`` on both sides without a DISCONNECT (the broker sends the Will)."""
        writers = self._conns.pop(conn, None)
        if writers is None:
            return
        for writer in writers:
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()

    # ------------------------------------------------------------------ the proxy
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count += 1
        conn = self._count
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._conns[conn] = (writer, up_writer)
        state = {"level": 4}
        tasks = [
            asyncio.create_task(self._pump(reader, up_writer, conn, state)),
            asyncio.create_task(self._pump(up_reader, writer, None, state)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.packets.append(Packet(conn, "CLOSED", time.time()))
            self.cut(conn)
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: int | None, state: dict[str, int]
    ) -> None:
        frames = FrameReader()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await src.read(65536):
                if conn is not None:
                    for kind, flags, body in frames.feed(data):
                        self.packets.append(self._record(conn, kind, flags, body, state))
                dst.write(data)
                await dst.drain()

    @staticmethod
    def _record(conn: int, kind: int, flags: int, body: bytes, state: dict[str, int]) -> Packet:
        now = time.time()
        name = _NAMES.get(kind, f"TYPE{kind}")
        fields: dict[str, Any] = {}
        v5 = state["level"] == 5
        if kind == CONNECT:
            state["level"] = level = body[6] if len(body) > 6 else 0
            if level == 5:
                c5 = parse_connect5(body)
                fields = {
                    "level": 5,
                    "client_id": c5.client_id,
                    "clean": c5.clean_start,
                    "session_expiry": c5.session_expiry,
                    "receive_maximum": c5.receive_maximum,
                    "will": c5.will,
                    "keepalive": c5.keepalive,
                }
            else:
                c = parse_connect(body)
                fields = {
                    "level": c.level,
                    "client_id": c.client_id,
                    "clean": c.clean_session,
                    "will": c.will,
                }
                fields["keepalive"] = c.keepalive
        elif kind == SUBSCRIBE:
            _, filters = (parse_subscribe5 if v5 else parse_subscribe)(body)
            fields = {"filters": [(f, options & 0x03) for f, options in filters]}
        elif kind == PUBLISH:
            if v5:
                topic, _packet_id, _props, payload = parse_publish5(flags, body)
            else:
                topic, _packet_id, payload = parse_publish(flags, body)
            fields = {"topic": topic, "qos": flags >> 1 & 3, "retain": bool(flags & 1), "payload": payload}
        elif kind == DISCONNECT:
            fields = {"reason": body[0] if body else 0}
        return Packet(conn, name, now, fields)
