"""The audit chain of what is run by hand: maintenance, reports, signatures.

Commands (``uns lake compact``, ``uns batch report``, ``uns batch sign``, the web
workspace) record their entries in one chain of their own, writer id
:data:`uns.lake.audit.CLI_WRITER`, through a :class:`uns.lake.writer.DeltaWriter`
that creates the lake's tables when a command comes before the first engine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uns.lake.audit import CLI_WRITER, AuditRecorder
from uns.lake.audit_entries import entry, os_user
from uns.lake.storage import LakeStore
from uns.lake.writer import DeltaWriter

__all__ = ["cli_recorder", "record_report"]


def _now_us() -> int:
    return time.time_ns() // 1000


def record_report(
    lake: str | Path,
    sha256: str,
    subject: str,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Record a generated report in the lake's audit trail (``kind = report``): its SHA-256,
    what it is about (``subject``: a batch id, a path) and who made it (default: the OS
    user).  Returns the entry's ``seq`` in the :data:`CLI_WRITER` chain.  For the batch
    reports of ``uns batch`` (issue 16) and anyone else who renders a record of the lake."""
    audit = cli_recorder(Path(lake))
    body = {"sha256": sha256, **(detail or {})}
    audit.record([entry(_now_us(), "report", subject, body, actor=actor or os_user())])
    return audit.tail()[0]


def cli_recorder(
    root: str | Path | LakeStore, *, writer_id: str = CLI_WRITER, audit: Any = None
) -> AuditRecorder:
    """The chain of what is run by hand and of reports (writer id :data:`CLI_WRITER`, or
    another chain that several processes share, such as a web workspace's); the lake's
    tables are created if missing (a command may come before the first engine).
    ``audit``: the configuration's ``[audit]`` section (its anchor)."""
    writer = DeltaWriter(root, writer_id)
    writer.ensure_tables()
    writer.audit.shared = True  # several commands (and web workspaces) append to this chain
    return writer.audit
