"""The audit trail's anchors: each writer's chain head, written once outside the lake.

Someone able to rewrite the lake can rewrite its audit chain consistently, or roll the
whole lake back; the chain alone cannot show it.  So every writer of audit entries
(the engine's commit worker, the commands run by hand, the web workspace) writes its
chain head -- writer id, seq, hash, time -- to ``audit.anchor`` at least every
``audit.anchor_interval_s`` while it records, and at every stop: one object per head,
never overwritten:

- a **directory** (meant for a separate volume or a WORM mount): the file
  ``<writer>/<seq, 20 digits>.json`` is created with ``O_EXCL``, synced, made read-only;
- **S3** (``s3://bucket/prefix``): the object of that name is put with ``If-None-Match:
  *`` and Object Lock retention in compliance mode for ``audit.anchor_retention_days``;
  a bucket without Object Lock is refused.

``<writer>`` is the writer id, ``(default)`` for the default writer.  The object is the
canonical JSON of ``{"v": 1, "writer_id", "seq", "hash", "time_us", "host", "lake"}``
(:func:`anchor_body`).  With ``audit.tsa_url`` its SHA-256 is also time-stamped by an
RFC 3161 authority (:mod:`uns.lake.tsa`) and the reply stored beside it as
``<seq>.tsr``.  ``uns audit verify`` compares the chain with the anchors
(:mod:`uns.audit.anchored`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from uns.errors import LakeError
from uns.lake.anchor_store import (
    AnchorExists,
    AnchorStore,
    DirectoryStore,
    StoredAnchor,
    anchor_body,
    anchor_name,
    seq_of,
    writer_dir,
)

__all__ = [
    "ANCHOR_ENV",
    "AnchorSettings",
    "AnchorStore",
    "Anchorer",
    "DirectoryStore",
    "StoredAnchor",
    "anchor_body",
    "anchor_name",
    "open_store",
    "seq_of",
    "writer_dir",
]

log = logging.getLogger(__name__)

#: how a writer's anchor settings reach the commit worker process (JSON)
ANCHOR_ENV: Final = "UNS_AUDIT_ANCHOR"


@dataclass(frozen=True, slots=True)
class AnchorSettings:
    """Where and how often a writer anchors (the ``[audit]`` keys of the configuration)."""

    location: str
    interval_s: float = 60.0
    retention_days: int = 3650
    tsa_url: str | None = None
    tsa_ca_file: str | None = None

    @classmethod
    def of(cls, audit: Any) -> AnchorSettings | None:
        """From the configuration's ``[audit]`` section; None when no anchor is set."""
        if audit is None or not getattr(audit, "anchor", None):
            return None
        return cls(str(audit.anchor), float(audit.anchor_interval_s), int(audit.anchor_retention_days),
                   audit.tsa_url, audit.tsa_ca_file)  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> AnchorSettings | None:
        text = os.environ.get(ANCHOR_ENV)
        return cls(**json.loads(text)) if text else None


def open_store(location: str, retention_days: int = 3650) -> AnchorStore:
    """The store of ``audit.anchor``: a directory or ``s3://bucket/prefix``."""
    if location.lower().startswith("s3://"):
        from uns.lake.anchors_s3 import S3Store  # noqa: PLC0415 - boto3 only for S3 anchors

        return S3Store(location, retention_days)
    if "://" in location and not location.lower().startswith("file://"):
        raise LakeError(f"audit.anchor {location!r}: a directory or s3://bucket/prefix")
    return DirectoryStore(location.removeprefix("file://"))


class Anchorer:
    """A writer's side: note each new head (:meth:`note`), write it when due (:meth:`due`)
    or now (:meth:`write`).  ``clock`` gives epoch microseconds."""

    def __init__(self, settings: AnchorSettings, writer_id: str, lake: str, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.writer_id = writer_id
        self.lake = lake
        self.clock = clock
        self.store = open_store(settings.location, settings.retention_days)
        self._head: tuple[int, str] | None = None
        self._anchored: tuple[int, str] | None = None
        self._last_us = clock()
        self.written = 0
        self.failures = 0

    def check(self) -> None:
        """At the writer's start: one clear line when anchors cannot be written."""
        self.store.check()

    def note(self, seq: int, hash_: str) -> None:
        self._head = (seq, hash_)

    def due(self) -> bool:
        """A new head waits and the interval has passed since the last anchor."""
        waited = self.clock() - self._last_us
        return self._head != self._anchored and waited >= self.settings.interval_s * 1e6

    def write(self) -> bool:
        """Anchor the head now if it changed since the last anchor; True when one was written."""
        head = self._head
        if head is None or head == self._anchored:
            return False
        now = self.clock()
        seq, hash_ = head
        body = anchor_body(self.writer_id, seq, hash_, now, socket.gethostname(), self.lake)
        name = anchor_name(self.writer_id, seq)
        try:
            self.store.put(name, body)
        except AnchorExists:
            existing = self.store.get(name) or b"{}"
            if json.loads(existing).get("hash") != hash_:
                raise LakeError(
                    f"audit anchor {name} names another hash than the chain's seq {seq}: the chain was "
                    "rewritten or the lake rolled back since it was anchored (uns audit verify)"
                ) from None
        else:
            self._timestamp(name, body)
        self._anchored, self._last_us = head, now
        self.written += 1
        return True

    def _timestamp(self, name: str, body: bytes) -> None:
        if not self.settings.tsa_url:
            return
        from uns.lake.tsa import request_token  # noqa: PLC0415 - an HTTP client only with a TSA

        try:
            token = request_token(self.settings.tsa_url, body)
            self.store.put(name.removesuffix(".json") + ".tsr", token)
        except LakeError as exc:  # the anchor stands; verify names the head without a token
            self.failures += 1
            log.warning("audit: no time-stamp for anchor %s: %s", name, exc)
