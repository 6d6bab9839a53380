"""Operability end to end, against the real mosquitto: /metrics moves as the traffic says
through `run_daemon` with a real lake, /readyz follows the broker, and `uns run` speaks
JSON log lines and systemd's notify protocol over a real unix datagram socket."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.edge import RawEdge
from tests.engine_helpers import engine_config
from tests.metrics_helpers import get, ready, scrape, value
from tests.test_cli import ROOT, UNS, _env
from uns.config import Config
from uns.engine.daemon import run_daemon
from uns.engine.sdnotify import Notifier
from uns.logs import setup_logging
from uns.mqtt.mosquitto import Mosquitto, free_port

Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


@contextlib.asynccontextmanager
async def daemon(config: Config) -> AsyncIterator[str]:
    """`run_daemon` in a task; yields the base URL of its HTTP endpoint once it answers."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(config, stop=stop))
    base = f"http://{config.engine.http_listen}"
    try:
        await until(lambda: _answers(base), "the endpoint answers", task)
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _answers(base: str) -> bool:
    try:
        return (await get(f"{base}/healthz"))[0] == 200
    except OSError:
        return False


async def until(
    cond: Callable[[], Any], what: str, task: asyncio.Task[Any] | None = None, timeout: float = 30
) -> None:
    """Poll an async ``cond`` until it is true (fails early if ``task`` ended)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the daemon ended before: {what}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def scraped(base: str, cond: Callable[[Scrape], bool], what: str) -> Scrape:
    """The first scrape for which ``cond`` holds."""
    found: list[Scrape] = []

    async def check() -> bool:
        found[:] = [await scrape(base)]
        return cond(found[0])

    await until(check, what)
    return found[0]


def _listen() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_metrics_move_as_the_traffic_says(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    cfg = engine_config(
        broker,
        ns,
        **{
            "lake.path": str(tmp_path / "lake"),
            "lake.commit_interval": 0.5,
            "republish.enabled": True,
            "engine.http_listen": _listen(),
        },
    )
    async with daemon(cfg) as base, aiomqtt.Client(broker.host, broker.port) as client:
        await until(lambda: _ready(base), "ready")
        await RawEdge(client, ns, "N1").born_with_data("D1", 10)
        before = await scraped(
            base, lambda s: value(s, "uns_messages_received_total", type="DDATA") == 10, "10 DDATA"
        )
        assert value(before, "uns_births_total", scope="device") == 1
        assert value(before, "uns_devices_online") == 1
        assert value(before, "uns_metrics_received_total") == 2 + 10  # the DBIRTH's two, then DDATA
        await client.publish(f"spBv1.0/{ns}/NDATA", b"garbage", qos=0)  # not a Sparkplug topic
        after = await scraped(
            base, lambda s: value(s, "uns_messages_received_total", type="invalid") == 1, "the garbage"
        )
        rejected = sum(after["uns_rejected_total"].values()) - sum(before["uns_rejected_total"].values())
        assert rejected == 1
        assert value(after, "uns_rejected_total", reason="not_sparkplug") == 1
        # the lake commits what came: rows by table, the lag and duration of each commit
        committed = await scraped(
            base,
            lambda s: (
                value(s, "uns_lake_rows_committed_total", table="measurements") >= 12
                and value(s, "uns_lake_rows_committed_total", table="rejected") >= 1
            ),
            "the lake's commits",
        )
        assert value(committed, "uns_lake_commit_lag_seconds_count") >= 1
        assert 0 < value(committed, "uns_lake_commit_lag_seconds_sum") < 30
        assert value(committed, "uns_lake_commit_duration_seconds_count") >= 1
        assert value(committed, "uns_lake_state", state="ok") == 1
        assert value(committed, "uns_lake_last_commit_timestamp_seconds") > 0
        assert value(committed, "uns_republish_published_total") >= 12


async def _ready(base: str) -> bool:
    return (await ready(base))[0] == 200


async def test_readiness_follows_the_broker(own_broker: Mosquitto, ns: str) -> None:
    cfg = engine_config(own_broker, ns, **{"engine.http_listen": _listen()})
    async with daemon(cfg) as base:
        await until(lambda: _ready(base), "ready")
        await asyncio.to_thread(own_broker.stop)
        await until(lambda: _not_ready(base, "not connected to the broker"), "503 without the broker")
        s = await scrape(base)
        assert value(s, "uns_broker_connected", connection="sparkplug") == 0
        assert value(s, "uns_ready") == 0
        assert (await get(f"{base}/healthz"))[0] == 200  # the process still runs its loop
        await asyncio.to_thread(own_broker.start)
        await until(lambda: _ready(base), "200 with the broker back")
        assert value(await scrape(base), "uns_broker_reconnects_total") == 1


async def _not_ready(base: str, reason: str) -> bool:
    status, doc = await ready(base)
    return status == 503 and reason in doc["reasons"] and doc["ready"] is False


def _datagrams(sock: socket.socket) -> list[str]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(4096).decode())
    return out


async def test_uns_run_logs_json_lines_and_notifies_systemd(broker: Mosquitto, ns: str) -> None:
    name = f"uns-test-{uuid.uuid4().hex}"
    listen = _listen()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd gives: NOTIFY_SOCKET=@name (abstract namespace)
        sock.setblocking(False)
        env = _env(
            UNS_BROKER=broker.url,
            UNS_LAKE="",
            UNS_HOST_ID=ns,
            UNS_ENGINE_PREFIX=f"{ns}/uns",
            UNS_ENGINE_LOG_FORMAT="json",
            NOTIFY_SOCKET=f"@{name}",
            WATCHDOG_USEC="400000",
        )
        proc = await asyncio.create_subprocess_exec(
            *UNS, "run", "--http", listen, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        got: list[str] = []
        try:

            async def notified(*needles: str) -> bool:
                got.extend(_datagrams(sock))
                return all(any(n in g for g in got) for n in needles)

            await until(lambda: notified("READY=1", "STATUS=ready"), "READY=1 and STATUS=ready")
            watchdogs = sum("WATCHDOG=1" in g for g in got)
            await until(lambda: _more(got, sock, "WATCHDOG=1", watchdogs + 2), "watchdog pings every 0.2 s")
            assert (await ready(f"http://{listen}"))[0] == 200
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        got.extend(_datagrams(sock))
    assert proc.returncode == 0, err.decode()
    assert got[0].startswith("READY=1\n"), got
    assert any(g.startswith("STOPPING=1\n") for g in got), got
    lines = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)
    assert all(doc["time"].endswith("Z") for doc in lines)
    loggers = {doc["logger"] for doc in lines}
    assert {"uns.daemon", "uns.http", "uns.engine"} <= loggers
    assert any("engine stopped" in doc["message"] for doc in lines)


async def _more(got: list[str], sock: socket.socket, needle: str, count: int) -> bool:
    got.extend(_datagrams(sock))
    return sum(needle in g for g in got) >= count


def test_notify_over_a_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.enabled
        assert notifier.watchdog_s == 30.0
        assert notifier.notify("READY=1", "STATUS=ready")
        assert _datagrams(sock) == ["READY=1\nSTATUS=ready"]
    # the socket is gone: one failure logged, never an exception
    assert notifier.notify("WATCHDOG=1") is False


@pytest.mark.parametrize(
    ("env", "watchdog"),
    [
        ({}, None),
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # not us
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "0"}, None),
    ],
)
def test_the_watchdog_is_ours_only_when_systemd_says_so(env: dict[str, str], watchdog: float | None) -> None:
    notifier = Notifier(env)
    assert notifier.watchdog_s == watchdog
    assert notifier.enabled == bool(env)
    if not env:
        assert notifier.notify("READY=1") is False  # run by hand: nothing is sent


def test_json_log_lines_carry_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("debug", "json", stream)
    try:
        log = logging.getLogger("uns.test")
        log.info("rejected on %s: %s", "spBv1.0/g/NDATA/n", "undecodable", extra={"topic": "t", "n": 3})
        try:
            _fail("boom \u00e9")
        except ValueError:
            log.exception("it broke")
        log.debug("multi\nline")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(docs) == 3  # one object per line, a newline in a message included
    first, second, third = docs
    assert first["message"] == "rejected on spBv1.0/g/NDATA/n: undecodable"
    assert (first["level"], first["logger"], first["topic"], first["n"]) == ("info", "uns.test", "t", 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "error"
    assert "ValueError: boom \u00e9" in second["exception"]
    assert third["message"] == "multi\nline"


def _fail(message: str) -> None:
    raise ValueError(message)
