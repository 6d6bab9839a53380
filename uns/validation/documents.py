"""Signing the documents of validation: a protocol, a periodic review (``uns audit sign``).

The same scheme as a batch report's signature (:mod:`uns.audit.signatures`): one
audit entry ``kind = signature`` in the ``uns-cli`` chain, with the signer's user id,
printed name and role (the enrolled owner of the key), the time, the meaning
(``reviewed``, ``approved``, ``rejected``), the reason, the SHA-256 of what was signed
and the chain's head, signed with the signer's trusted Ed25519 key; ``uns audit
verify`` checks it with every other.

What is signed is the document's own content hash -- ``protocol_sha256`` of a
protocol, ``content_sha256`` of a review -- checked against the content before
signing.  The entry's ``subject`` is ``<kind>:<sha256>`` (``protocol:...``,
``review:...``), so the signatures of one document are found by its hash.
"""

from __future__ import annotations

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
    from uns.validation.protocol import content_sha256, read_json  # noqa: PLC0415

    file = Path(path)
    doc = read_json(file, "a document uns signs (a validation protocol or a periodic review)", _MAX_BYTES)
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
    key: str,
    trusted_keys: str | None,
    user: str | None = None,
    reason: str | None = None,
    passphrase: bytes | None = None,
    audit: Any = None,
) -> tuple[int, str]:
    """Sign the protocol or review of ``path`` in ``lake``'s audit trail with the private key
    file ``key``, as the key's enrolled owner (``user``, if given, must be that owner), with
    ``meaning``; returns (the entry's seq in the ``uns-cli`` chain, the subject signed)."""
    import time  # noqa: PLC0415

    from uns import lake as lakes  # noqa: PLC0415
    from uns.audit.signatures import record_signature, trail_revocations, with_revocations  # noqa: PLC0415
    from uns.batch.signing import load_signing, signer_of_key  # noqa: PLC0415
    from uns.errors import SignatureError  # noqa: PLC0415
    from uns.lake.manual import cli_recorder  # noqa: PLC0415

    subject, sha, _doc = identify(path)
    signing, trusted, keyring = load_signing(key, trusted_keys, passphrase=passphrase)
    signer = signer_of_key(trusted, user)
    con = lakes.connect(str(lake))
    try:
        keys = with_revocations(keyring, trail_revocations(con))
    finally:
        con.close()
    if not keys[signing.name].valid_at(time.time_ns() // 1000):
        raise SignatureError(f"key {signing.name!r} is revoked")
    recorder = cli_recorder(lake, audit=audit)
    row = record_signature(
        recorder, subject, meaning=meaning, signer=signer, report_sha256=sha, key=signing, reason=reason or ""
    )
    return row.seq, subject


@dataclass(frozen=True, slots=True)
class DocumentSignature:
    """One signature of a document, judged against the trusted keys and their revocations."""

    signed_at: str
    user: str
    full_name: str
    meaning: str
    reason: str
    key: str | None
    verified: bool
    why: str
    writer_id: str
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed_at": self.signed_at, "user": self.user, "full_name": self.full_name,
            "meaning": self.meaning, "reason": self.reason, "key": self.key, "verified": self.verified,
            "why": self.why or "verified with the trusted key", "writer_id": self.writer_id, "seq": self.seq,
        }  # fmt: skip


def document_signatures(lake: str | Path, subject: str, trusted_keys: str | None) -> list[DocumentSignature]:
    """The signatures of the document ``subject`` (``protocol:<sha256>``, ``review:<sha256>``)
    in ``lake``'s trail, oldest first, each judged as a batch signature is (a trusted key not
    revoked when it signed, for its enrolled owner, at its own place in the chain)."""
    from uns import lake as lakes  # noqa: PLC0415
    from uns.audit.signatures import (  # noqa: PLC0415
        batch_signatures,
        check_signature,
        iso_us,
        trail_revocations,
        with_revocations,
    )
    from uns.keyring import load_keyring  # noqa: PLC0415

    sha = subject.split(":", 1)[1]
    con = lakes.connect(str(lake))
    try:
        keys = with_revocations(load_keyring(trusted_keys), trail_revocations(con))
        found = batch_signatures(con, subject)
    finally:
        con.close()
    out = []
    for sig in found:
        judged = check_signature(sig, keys, current_sha256=sha)
        out.append(
            DocumentSignature(
                iso_us(sig.ts_us), sig.user_id, sig.full_name, sig.meaning, sig.reason, sig.key,
                judged.counts, judged.why, sig.writer_id, sig.seq,
            )
        )  # fmt: skip
    return out
