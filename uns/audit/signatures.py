"""Electronic signatures of batch reports, as entries of the audit trail (Part 11 §11.50, §11.70).

A signature is one audit entry (``kind = signature``) in the :data:`lake.audit.CLI_WRITER`
chain: ``subject`` the batch id, ``actor`` the signer's printed name, ``reason`` the
signer's comment, ``ts`` the time of signing, and ``detail``::

    {"batch_id": ..., "meaning": "reviewed" | "approved" | "rejected",
     "report_sha256": <SHA-256 of the report content signed>, "spec": <spec file or null>,
     "signature": {"alg": "Ed25519", "key": <key name>, "sig": <base64>}}   # with --key only

The hash chain makes the entry tamper-evident like every other; with a key, the
Ed25519 signature covers :func:`signed_content` -- the signer, time, meaning,
reason, batch and report hash of *this* entry -- so it cannot be copied to another
record or another report (§11.70), and :func:`signature_findings` (run by ``uns audit
verify``) checks it against the trusted public keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from uns.core.signing import canonical_json, signature_block, verify_block
from uns.errors import SignatureError
from uns.lake.audit import CLI_WRITER
from uns.lake.audit_entries import entry
from uns.lake.hashing import ChainRow

if TYPE_CHECKING:
    import duckdb
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "KIND",
    "MEANINGS",
    "BatchSignature",
    "batch_signatures",
    "record_signature",
    "signature_findings",
    "signed_content",
]

KIND: Final = "signature"
#: what a signature means (§11.50(a)(3))
MEANINGS: Final = ("reviewed", "approved", "rejected")


def signed_content(ts_us: int, user: str, reason: str, batch_id: str, detail: Mapping[str, Any]) -> bytes:
    """What the Ed25519 signature of a signature entry covers: the canonical JSON of
    ``{"kind": "signature", "batch_id", "user", "reason", "signed_at_us", "meaning",
    "report_sha256"}`` taken from the entry itself."""
    return canonical_json(
        {
            "kind": KIND,
            "batch_id": batch_id,
            "user": user,
            "reason": reason,
            "signed_at_us": ts_us,
            "meaning": detail.get("meaning"),
            "report_sha256": detail.get("report_sha256"),
        }
    )


def record_signature(
    lake_dir: str | Path,
    batch_id: str,
    *,
    meaning: str,
    user: str,
    report_sha256: str,
    reason: str = "",
    key: tuple[str, Ed25519PrivateKey] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """Append the signature entry of ``batch_id``'s report (see the module doc); returns
    its ``seq`` in the :data:`CLI_WRITER` chain."""
    from uns.lake.writer import DeltaWriter  # noqa: PLC0415 - lake.writer pulls in the commit machinery

    if meaning not in MEANINGS:
        raise SignatureError(f"meaning must be one of {', '.join(MEANINGS)}, not {meaning!r}")
    if not user.strip():
        raise SignatureError("a signature needs the signer's name (--user)")
    ts_us = time.time_ns() // 1000
    detail: dict[str, Any] = {
        "batch_id": batch_id,
        "meaning": meaning,
        "report_sha256": report_sha256,
        **(extra or {}),
    }
    if key is not None:
        name, private = key
        detail["signature"] = signature_block(
            private, name, signed_content(ts_us, user, reason, batch_id, detail)
        )
    writer = DeltaWriter(Path(lake_dir), CLI_WRITER)
    writer.audit.record([entry(ts_us, KIND, batch_id, detail, actor=user, reason=reason)])
    return writer.audit.tail()[0]


@dataclass(frozen=True, slots=True)
class BatchSignature:
    """One signature of a batch, as the report lists it."""

    ts_us: int
    user: str
    meaning: str
    reason: str
    report_sha256: str
    key: str | None  # the signing key's name; None: signed without a key

    def to_dict(self, current_sha256: str | None) -> dict[str, Any]:
        """For the report: ``covers_current`` says whether it signed the report as it is now
        (``signed_at`` in epoch microseconds; the report writes it as ISO 8601)."""
        return {
            "signed_at": self.ts_us,
            "user": self.user,
            "meaning": self.meaning,
            "reason": self.reason,
            "report_sha256": self.report_sha256,
            "key": self.key,
            "covers_current": current_sha256 is not None and current_sha256 == self.report_sha256,
        }


def batch_signatures(con: duckdb.DuckDBPyConnection, batch_id: str) -> list[BatchSignature]:
    """The signatures of ``batch_id`` in the audit trail of ``con``'s lake, oldest first."""
    rows = con.execute(
        "SELECT epoch_us(ts), actor, reason, detail FROM audit "
        "WHERE kind = ? AND subject = ? ORDER BY ts, seq",
        [KIND, batch_id],
    ).fetchall()
    out = []
    for ts_us, actor, reason, text in rows:
        detail = json.loads(text) if text else {}
        block = detail.get("signature")
        key = block.get("key") if isinstance(block, dict) else None
        out.append(
            BatchSignature(
                int(ts_us),
                str(actor),
                str(detail.get("meaning")),
                str(reason or ""),
                str(detail.get("report_sha256")),
                key if isinstance(key, str) else None,
            )
        )
    return out


def signature_findings(
    chain: Sequence[ChainRow], trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[int, list[str]]:
    """(digital signatures verified, one line per signature entry whose Ed25519
    signature is malformed, by an untrusted key, or does not match its entry)."""
    verified = 0
    findings: list[str] = []
    for row in chain:
        if row.kind != KIND:
            continue
        try:
            detail = json.loads(row.detail)
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            findings.append(f"{row.writer_id}#{row.seq}: signature entry with an unreadable detail")
            continue
        if "signature" not in detail:
            continue  # an electronic signature without a key: the hash chain protects it
        meaning = detail.get("meaning")
        what = f"{row.writer_id}#{row.seq}: signature of batch {row.subject} by {row.actor} ({meaning})"
        try:
            data = signed_content(row.ts, row.actor, row.reason, row.subject, detail)
            verify_block(detail["signature"], data, trusted)
        except SignatureError as exc:
            findings.append(f"{what}: {exc.reason}")
        else:
            verified += 1
    return verified, findings
