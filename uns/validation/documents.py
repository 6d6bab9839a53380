"""Signing the documents of validation: a protocol, a periodic review (``uns audit sign``).

The same scheme as a batch report's signature (:mod:`uns.audit.signatures`): one
audit entry ``kind = signature`` in the ``uns-cli`` chain, with the signer's printed
name, the time, the meaning (``reviewed``, ``approved``, ``rejected``), the reason,
and the SHA-256 of what was signed; with ``--key`` an Ed25519 signature over that
entry by a trusted key, which ``uns audit verify`` checks with every other.

What is signed is the document's own content hash -- ``protocol_sha256`` of a
protocol, ``content_sha256`` of a review -- checked against the content before
signing.  The entry's ``subject`` is ``<kind>:<sha256>`` (``protocol:...``,
``review:...``), so the signatures of one document are found by its hash, and the
``detail`` names the document (``document``, ``title``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from uns.errors import UnsError

__all__ = ["DOCUMENTS", "DocumentSignature", "document_signatures", "identify", "sign_document"]

#: the documents that can be signed: their ``document`` field -> (subject prefix, hash field)
DOCUMENTS: Final = {
    "uns validation protocol": ("protocol", "protocol_sha256"),
    "uns periodic review": ("review", "content_sha256"),
}
_MAX_BYTES: Final = 64 << 20


def identify(path: str | Path) -> tuple[str, str, dict[str, Any]]:
    """``(subject, sha256, document)`` of a protocol or review file; UnsError when it is
    neither or its content does not match the hash it carries."""
    from uns.validation.protocol import content_sha256  # noqa: PLC0415

    file = Path(path)
    try:
        with file.open("rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise UnsError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(data) if len(data) <= _MAX_BYTES else None
    except ValueError:
        doc = None
    kind = DOCUMENTS.get(str(doc.get("document"))) if isinstance(doc, dict) else None
    if kind is None or not isinstance(doc, dict):
        known = ", ".join(DOCUMENTS)
        raise UnsError(f"{file} is not a document uns signs ({known}; a batch report: uns batch sign)")
    prefix, field = kind
    sha = content_sha256(doc, field)
    if doc.get(field) != sha:
        raise UnsError(f"{file}: its {field} does not match its content: it was changed after it was written")
    return f"{prefix}:{sha}", sha, doc


def sign_document(
    lake: str | Path,
    path: str | Path,
    *,
    meaning: str,
    user: str,
    reason: str | None,
    key: str | None,
    trusted_keys: str | None,
) -> tuple[int, str]:
    """Sign the protocol or review of ``path`` in ``lake``'s audit trail as ``user`` with
    ``meaning`` (and ``key``, a trusted private key); returns (the entry's seq in the
    ``uns-cli`` chain, the subject signed)."""
    from uns.audit.signatures import record_signature  # noqa: PLC0415
    from uns.batch.signing import _signing_key  # noqa: PLC0415 - until the public signing API (issue 28)

    subject, sha, doc = identify(path)
    signing = _signing_key(key, trusted_keys) if key is not None else None
    extra = {"document": doc["document"], "title": doc.get("title")}
    seq = record_signature(
        lake, subject, meaning=meaning, user=user, report_sha256=sha, reason=reason or "", key=signing,
        extra=extra,
    )  # fmt: skip
    return seq, subject


@dataclass(frozen=True, slots=True)
class DocumentSignature:
    """One signature of a document, judged against the trusted keys."""

    signed_at: str
    user: str
    meaning: str
    reason: str
    key: str | None
    verified: bool
    why: str
    writer_id: str
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed_at": self.signed_at, "user": self.user, "meaning": self.meaning,
            "reason": self.reason, "key": self.key, "verified": self.verified, "why": self.why,
            "writer_id": self.writer_id, "seq": self.seq,
        }  # fmt: skip


def document_signatures(
    lake: str | Path, subject: str, trusted: Mapping[str, Any]
) -> list[DocumentSignature]:
    """The signatures of the document ``subject`` in ``lake``'s trail, oldest first, each
    verified against ``trusted`` (name -> public key); a signature without a key is an
    electronic note: ``verified`` False, ``why`` says so."""
    from uns import lake as lakes  # noqa: PLC0415
    from uns.audit.signatures import KIND, signature_findings  # noqa: PLC0415
    from uns.batch.times import iso  # noqa: PLC0415
    from uns.lake.hashing import ChainRow  # noqa: PLC0415

    con = lakes.connect(str(lake))
    try:
        rows = con.execute(
            "SELECT writer_id, seq, epoch_us(ts), kind, actor, reason, subject, detail, prev_hash, hash "
            "FROM audit WHERE kind = ? AND subject = ? ORDER BY ts, seq",
            [KIND, subject],
        ).fetchall()
    finally:
        con.close()
    out = []
    for values in rows:
        row = ChainRow(*values)
        detail = json.loads(row.detail) if row.detail else {}
        block = detail.get("signature") if isinstance(detail, dict) else None
        name = block.get("key") if isinstance(block, dict) else None
        if block is None:
            verified, why = False, "no key: an electronic note, not a digital signature"
        else:
            count, findings = signature_findings([row], trusted)
            verified, why = count == 1, "; ".join(findings) or "verified with the trusted key"
        out.append(
            DocumentSignature(
                str(iso(row.ts // 1000)), row.actor, str(detail.get("meaning")), row.reason or "",
                name if isinstance(name, str) else None, verified, why, row.writer_id, row.seq,
            )
        )  # fmt: skip
    return out
