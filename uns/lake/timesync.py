"""Whether the host's clock is synchronised, as far as the system tells (``engine_start``).

Audit entries carry the host's time; an auditor asks whether that time could be
trusted.  Each engine start records the time synchronisation state from the first
source that answers:

1. ``timedatectl show`` (systemd-timesyncd or whatever systemd knows): ``NTPSynchronized``;
2. ``chronyc -n tracking`` (chrony): its ``Leap status`` (``Not synchronised`` or not);
3. the kernel's own NTP state (``ntp_adjtime``, read only): ``TIME_ERROR`` means the
   clock is not synchronised; its maximum error is recorded too.

and ``{"source": "unknown", "synchronized": null}`` when none does.  Standard library
only; each command gets :data:`TIMEOUT_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import struct
import subprocess
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TIMEOUT_S", "time_sync_state"]

TIMEOUT_S: Final = 2.0
_TIME_ERROR: Final = 5  # ntp_adjtime's clock state when the clock is not synchronised
Runner = Callable[[list[str]], str | None]


def _run(argv: list[str]) -> str | None:
    """The command's output, None when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _timedatectl(run: Runner) -> dict[str, Any] | None:
    text = run(["timedatectl", "show"])
    if not text:
        return None
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "NTPSynchronized" not in props:
        return None
    return {"source": "timedatectl", "synchronized": props["NTPSynchronized"] == "yes",
            "detail": f"NTP={props.get('NTP', '?')} NTPSynchronized={props['NTPSynchronized']}"}  # fmt: skip


def _chronyc(run: Runner) -> dict[str, Any] | None:
    text = run(["chronyc", "-n", "tracking"])
    if not text:
        return None
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}
    leap = fields.get("Leap status")
    if leap is None:
        return None
    shown = ("Reference ID", "System time", "Leap status")
    detail = "; ".join(f"{k}: {fields[k]}" for k in shown if k in fields)
    return {"source": "chronyc", "synchronized": leap != "Not synchronised", "detail": detail}


def _kernel() -> dict[str, Any] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(libc.ntp_adjtime(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    max_error_us = struct.unpack_from("q", buf.raw, 24)[0]  # after modes (+pad), offset, freq
    return {"source": "kernel", "synchronized": state != _TIME_ERROR,
            "detail": f"ntp_adjtime state {state}, maximum error {max_error_us} µs"}  # fmt: skip


def time_sync_state(run: Runner = _run, *, kernel: bool = True) -> dict[str, Any]:
    """``{"source", "synchronized", "detail"}`` of the first source that answers (see the
    module doc); ``run`` runs a command (tests pass canned outputs)."""
    for probe in (_timedatectl, _chronyc):
        found = probe(run)
        if found is not None:
            return found
    found = _kernel() if kernel else None
    unknown = {"source": "unknown", "synchronized": None, "detail": "no time synchronisation state found"}
    return found or unknown
