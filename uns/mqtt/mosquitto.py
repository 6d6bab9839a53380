"""A private mosquitto on a free loopback port, for `uns demo`, tests and benchmarks.

It gets its own config file in a temporary directory (loopback listener only,
anonymous access, no persistence, no queue limits) and is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from uns.errors import EngineError

__all__ = [
    "Mosquitto",
    "find_mosquitto",
    "free_port",
    "password_file",
    "running_mosquitto",
]


def find_mosquitto() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def password_file(directory: Path, user: str, password: str) -> Path:
    """A mosquitto password file with one user (``mosquitto_passwd`` hashes the password)."""
    path = directory / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True, capture_output=True
    )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mosquitto:
    """A running mosquitto; ``stop()``/``start()`` simulate a broker restart on the same port.

    As a context manager it is started on entry and stopped on exit::

        with Mosquitto(port=free_port(), workdir=d, listener_conf=conf) as broker:
            ...
    """

    port: int
    workdir: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    #: replaces the default anonymous plain-TCP listener (e.g. a TLS listener with a password file)
    listener_conf: str | None = None
    #: keep sessions and queued QoS 1 messages across a restart (the production setting for
    #: durable context intake: ``persistence true``), saved in ``workdir`` on stop and every second
    persistence: bool = False
    #: lines added to the config (e.g. ``max_queued_messages 10``)
    extra_conf: str = ""

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise EngineError("mosquitto is not installed: run 'apt-get install mosquitto' (as root)")
        conf = self.workdir / "mosquitto.conf"
        listener = self.listener_conf or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            # started as root, mosquitto drops to its own user, who cannot write our workdir
            + ("user root\n" if os.geteuid() == 0 else "")
            if self.persistence
            else "persistence false\n"
        )
        conf.write_text(
            listener + "\n" + persistence + "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n" + self.extra_conf
        )
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise EngineError(f"mosquitto did not accept connections on port {self.port} within {timeout}s")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def running_mosquitto(port: int | None = None) -> Iterator[Mosquitto]:
    with (
        tempfile.TemporaryDirectory(prefix="uns-mosq-") as d,
        Mosquitto(port=port or free_port(), workdir=Path(d)) as broker,
    ):
        yield broker
