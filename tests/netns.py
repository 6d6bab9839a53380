"""A small network of test hosts on this machine: Linux network namespaces and veth links.

:class:`HostNetwork` builds a broker host and ``engines`` engine hosts, each engine host
linked to the broker host by a veth pair of its own (subnet ``10.219.<n>.0/24``: the
broker host is ``.1``, engine host ``n`` is ``.2``), plus a link from this (the test's)
namespace to the broker host (``10.219.0.1`` here, ``10.219.0.2`` there), where the test
runs the edge nodes and the MES.  Engine hosts reach the broker and nothing else; the
hosts share this machine's filesystem (the lake).  Everything is removed on exit.

Needs root and iproute2 (``ip``); :func:`unavailable` says why not when it cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from types import TracebackType
from typing import Self

__all__ = ["HostNetwork", "unavailable"]


def unavailable() -> str | None:
    """Why namespaces cannot be built here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    probe = f"u19p{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class HostNetwork:
    """A broker host and ``engines`` engine hosts (a context manager)."""

    def __init__(self, engines: int) -> None:
        tag = uuid.uuid4().hex[:5]
        self.tag = f"u{tag}"
        self.broker_ns = f"{self.tag}-broker"
        self.engine_ns = [f"{self.tag}-e{n}" for n in range(1, engines + 1)]
        #: the broker host's address as this namespace (the edge nodes, the MES) reaches it
        self.broker_here = "10.219.0.2"

    def broker_for(self, engine: int) -> str:
        """The broker host's address on engine host ``engine``'s link (1-based)."""
        return f"10.219.{engine}.1"

    def run_in(self, namespace: str, argv: list[str]) -> list[str]:
        """``argv`` as a command that runs on host ``namespace``."""
        return ["ip", "netns", "exec", namespace, *argv]

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self._destroy()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._destroy()

    def _link(
        self, here: str, there: str, there_ns: str, here_addr: str, there_addr: str, here_ns: str
    ) -> None:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", there_ns)
        if here_ns:
            _ip("link", "set", here, "netns", here_ns)
        _ip(*(["-n", here_ns] if here_ns else []), "addr", "add", f"{here_addr}/24", "dev", here)
        _ip(*(["-n", here_ns] if here_ns else []), "link", "set", here, "up")
        _ip("-n", there_ns, "addr", "add", f"{there_addr}/24", "dev", there)
        _ip("-n", there_ns, "link", "set", there, "up")

    def _build(self) -> None:
        for ns in (self.broker_ns, *self.engine_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        self._link(f"{self.tag}r", f"{self.tag}rb", self.broker_ns, "10.219.0.1", self.broker_here, "")
        for n, ns in enumerate(self.engine_ns, start=1):
            self._link(
                f"{self.tag}e{n}", f"{self.tag}b{n}", self.broker_ns, f"10.219.{n}.2", self.broker_for(n), ns
            )

    def _destroy(self) -> None:
        """Remove the namespaces (their veth ends, and so the peers here, go with them)."""
        for ns in (self.broker_ns, *self.engine_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"{self.tag}r"], capture_output=True, check=False)
