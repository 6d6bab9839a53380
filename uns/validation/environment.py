"""The environment a qualification ran in, as the evidence records it.

OS and kernel, the Python and its executable, uns and every runtime dependency (the
``Requires-Dist`` closure IQ-03 checks), the mosquitto, Chromium and Playwright
versions (the broker the OQ started, the browser that printed the PDF), the time
synchronisation state of the host (:mod:`uns.lake.timesync`), the user, the host,
and the configuration's SHA-256 -- the same hash ``uns run`` records in its
``engine_start`` audit entry, so a reviewer can match a qualification to the
engine starts it covers.
"""

from __future__ import annotations

import getpass
import importlib.metadata as md
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import uns

if TYPE_CHECKING:
    from uns.config import Config

__all__ = ["environment", "os_release", "tool_version"]

_TIMEOUT_S: Final = 10.0


def tool_version(argv: list[str]) -> str:
    """The first non-empty line a program prints about its version, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return "not installed"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if "version" in line.lower() or line[:1].isalpha():
            return line.strip()
    return f"unknown (exit {done.returncode}, no output)"


def os_release() -> str:
    """PRETTY_NAME of /etc/os-release (the distribution), or the platform string."""
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _dependencies() -> dict[str, str]:
    from uns.validation.iq import DISTRIBUTION, runtime_closure  # noqa: PLC0415

    try:
        found, _problems = runtime_closure(md.distribution(DISTRIBUTION))
    except md.PackageNotFoundError:
        return {}
    return {dep.metadata["Name"]: dep.version for dep in found.values()}


def _distribution(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def _mosquitto(broker: str | None) -> str:
    from uns.mqtt.mosquitto import find_mosquitto  # noqa: PLC0415

    exe = find_mosquitto()
    if exe is None:
        return "not installed"
    version = tool_version([exe, "-h"])
    return version if broker is None else f"{version} (installed; the OQ used the broker given)"


def _chromium() -> str:
    from uns.errors import UnsError  # noqa: PLC0415
    from uns.pdf import find_chromium  # noqa: PLC0415

    try:
        exe = find_chromium()
    except UnsError:
        return "not installed"
    return tool_version([exe, "--version"])


def environment(config: Config | None, *, broker: str | None, config_file: str | None) -> dict[str, Any]:
    """The environment record of the evidence (``broker``: the OQ's, None for a private
    mosquitto; ``config``: the effective configuration qualified, None if it did not load)."""
    from uns.lake.hashing import file_sha256  # noqa: PLC0415
    from uns.lake.timesync import time_sync_state  # noqa: PLC0415
    from uns.mqtt.settings import parse_broker_url  # noqa: PLC0415
    from uns.validation.protocol import config_sha256  # noqa: PLC0415

    uname = platform.uname()
    config_path = config_file or os.environ.get("UNS_CONFIG") or None
    try:
        file_digest = file_sha256(Path(config_path)) if config_path else None
    except OSError as exc:
        file_digest = f"unreadable: {exc.strerror or exc}"
    return {
        "host": socket.gethostname(),
        "user": _user(),
        "os": os_release(),
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "machine": uname.machine,
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "uns_version": uns.__version__,
        "uns_location": str(Path(uns.__file__).resolve().parent.parent),
        "dependencies": _dependencies(),
        "mosquitto": _mosquitto(broker),
        "chromium": _chromium(),
        "playwright": _distribution("playwright"),
        "time_sync": time_sync_state(),
        "broker": parse_broker_url(broker).masked_url() if broker else "private mosquitto on a free port",
        "config_file": config_path or "(none: defaults and UNS_* variables)",
        "config_file_sha256": file_digest,
        "config_sha256": config_sha256(config) if config is not None else None,
    }
