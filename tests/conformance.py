"""The Sparkplug TCK host assertions and the tests that show each (docs/sparkplug.md, "Conformance").

A conformance test names the TCK ids it shows with :func:`tck`; the table in
docs/sparkplug.md is generated from these marks (``python -m tests.test_conformance_table``
rewrites it) and ``tests/test_conformance_table.py`` fails when an id of the TCK's list
(``tests/tck_host_ids.txt``, and ``../shared/SPARKPLUG-TCK.md`` where it is beside the
checkout) has no test, or the table is stale.

:class:`UnsRun` runs ``uns run`` as its own process, as a plant (and the TCK's
operator) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt
import pytest

from tests.engine_helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Shown:
    """A test that shows some TCK ids, and what uns does for them (one table row each)."""

    test: str  # module::function
    does: str


#: TCK id -> the tests that show it
REGISTRY: dict[str, list[Shown]] = {}


def tck(*ids: str, does: str) -> Callable[[F], F]:
    """Mark a test as showing ``ids``; ``does`` says, in a line, what uns does for them."""

    def mark(fn: F) -> F:
        module = fn.__module__.rsplit(".", 1)[-1]
        for ident in ids:
            REGISTRY.setdefault(ident, []).append(Shown(f"{module}.py::{fn.__name__}", does))
        marked: F = pytest.mark.tck(*ids)(fn)
        return marked

    return mark


def tck_ids() -> dict[str, str]:
    """The TCK's host assertion ids, id -> test class (``tests/tck_host_ids.txt``)."""
    ids: dict[str, str] = {}
    section = ""
    for raw in (ROOT / "tests" / "tck_host_ids.txt").read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            ids[line] = section
    return ids


# ---------------------------------------------------------------- uns run, as its own process
class UnsRun:
    """``uns run`` in a child process with ``args`` and ``env``; :meth:`stop` is SIGTERM."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.env = {
            **os.environ,
            "UNS_LAKE": "",
            "UNS_REPUBLISH_ENABLED": "false",
            "UNS_BROKER_RECONNECT_MIN": "0.1",
            "UNS_BROKER_RECONNECT_MAX": "0.5",
            "UNS_ENGINE_STATUS_INTERVAL": "0.5",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = b""
        # stderr: a pipe could fill up and stall the child; closed in wait()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    async def __aenter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uns", "run", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        return self

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code (the engine drains, flushes, says offline, disconnects)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code, once the process ends by itself."""
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("uns run did not stop within its timeout")
            await asyncio.sleep(0.05)
        self._log.seek(0)
        self.stderr = self._log.read()
        self._log.close()
        return proc.returncode

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                await self.stop()


async def retained(host: str, port: int, topic: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The retained JSON message on ``topic``."""
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout):
            async for msg in client.messages:
                if msg.retain:
                    body = json.loads(bytes(msg.payload))
                    assert isinstance(body, dict)
                    return body
    raise AssertionError(f"no retained message on {topic}")


class StatusWatch:
    """The engine's latest status document (``<prefix>/_engine/<host_id>/status``), kept current."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.doc: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    async def _follow(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.subscribe(self.topic, qos=0)
            async for msg in client.messages:
                self.doc = json.loads(bytes(msg.payload))

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def until(self, cond: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0) -> None:
        await wait_for(lambda: bool(self.doc) and cond(self.doc), timeout, what)


def lake_sessions(lake: Path, group: str) -> list[tuple[int, str | None, str | None, str, str]]:
    """(ts ms, edge node, device, event, detail) of the lake's ``sessions`` rows of ``group``."""
    from uns.lake import connect  # noqa: PLC0415

    con = connect(lake)
    try:
        rows = con.execute(
            "SELECT epoch_ms(ts), edge_node_id, device_id, event, detail FROM sessions "
            "WHERE group_id = ? ORDER BY ts, event",
            [group],
        ).fetchall()
    finally:
        con.close()
    return [(int(r[0]), r[1], r[2], str(r[3]), str(r[4] or "")) for r in rows]
