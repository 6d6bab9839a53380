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

from uns.lake.anchors import AnchorSettings
from uns.lake.audit import CLI_WRITER, AuditRecorder
from uns.lake.audit_entries import entry, os_user
from uns.lake.storage import LakeStore
from uns.lake.writer import DeltaWriter

__all__ = ["cli_recorder", "record_report"]


def _now_us() -> int:
    return time.time_ns() // 1000


def record_report(
    lake: str | Path | LakeStore,
    sha256: str,
    subject: str,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
    *,
    audit: Any = None,
) -> int:
    """Record a generated report in the lake's audit trail (``kind = report``): its SHA-256,
    what it is about (``subject``: a batch id, a path) and who made it (default: the OS
    user).  Returns the entry's ``seq`` in the :data:`CLI_WRITER` chain.  For the batch
    reports of ``uns batch`` (issue 16) and anyone else who renders a record of the lake."""
    recorder = cli_recorder(lake, audit=audit)
    body = {"sha256": sha256, **(detail or {})}
    recorder.record([entry(recorder.clock(), "report", subject, body, actor=actor or os_user())])
    return recorder.tail()[0]


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
    writer.audit.use_anchor(AnchorSettings.of(audit), eager=True)  # a command anchors what it recorded
    if writer.audit.anchor is not None:
        writer.audit.anchor.check()  # refused before anything is recorded
    return writer.audit
