"""Electronic signatures of batch reports, as entries of the audit trail (Part 11 §11.50, §11.70).

A signature is one audit entry (``kind = signature``) in the chain of the writer that
made it (:data:`uns.lake.audit.CLI_WRITER` for ``uns batch sign``): ``subject`` the batch
id, ``actor`` the signer's user id, ``reason`` the signer's comment, ``ts`` the time of
signing, and ``detail``::

    {"v": 2, "batch_id": ..., "user_id": ..., "full_name": ..., "role": ... | null,
     "meaning": "reviewed" | "approved" | "rejected",
     "report_sha256": <SHA-256 of the report content signed>,
     "spec": {"file", "name", "version", "sha256"} | null,
     "chain_head": {"writer": ..., "seq": <seq - 1>, "hash": <prev_hash>},
     "signature": {"alg": "Ed25519", "key": <key name>, "sig": <base64>}}

The Ed25519 signature covers :func:`signed_content`: every field above but the
signature itself, plus the reason and the time -- so it cannot be copied to another
batch, report, signer, time or place in the chain (a replayed copy sits at another
position than the ``chain_head`` it signed), §11.70.  A key signs for its enrolled owner
only (:class:`uns.keyring.KeyOwner`), unless it is a service's key (``signs_for =
"users"``: the web workspace, which authenticates the users it signs for).

:func:`check_signature` is the one judgement every face uses: cryptographically valid,
by a trusted key not revoked at the time of signing, for the identity the key may sign
for, at its own place in the chain, after the batch started -- and whether the report
content is still what was signed (or the report was made with another spec).  An entry
without a key (made before keys were required) is listed as an unverified note that
never counts toward review or approval.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from uns.clock import iso_us
from uns.core.signing import canonical_json, signature_block, verify_block
from uns.errors import SignatureError
from uns.keyring import Revocation, TrustedKey
from uns.lake.audit_entries import entry
from uns.lake.hashing import ChainRow

if TYPE_CHECKING:
    import duckdb
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from uns.lake.audit import AuditRecorder

__all__ = [
    "KIND",
    "MEANINGS",
    "VERSION",
    "BatchSignature",
    "SignatureCheck",
    "Signer",
    "SigningKey",
    "batch_signatures",
    "check_signature",
    "iso_us",
    "record_signature",
    "revocations",
    "signature_findings",
    "signed_content",
]

KIND: Final = "signature"
#: what a signature means (§11.50(a)(3))
MEANINGS: Final = ("reviewed", "approved", "rejected")
#: the form of the signed content (1: before issue 28, the signer's name as typed)
VERSION: Final = 2
#: the audit entry kinds of the key life cycle (uns.audit.keys)
KEY_TRUSTED: Final = "key_trusted"
KEY_REVOKED: Final = "key_revoked"


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signs: an authenticated identity (user id), the printed name (§11.50) and role."""

    user_id: str
    full_name: str
    role: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the name it is trusted under (``<name>.pub``)."""

    name: str
    private: Ed25519PrivateKey


def signed_content(ts_us: int, reason: str, batch_id: str, detail: Mapping[str, Any]) -> bytes:
    """What the Ed25519 signature of a signature entry covers: the canonical JSON of the
    entry's detail without its ``signature``, with ``kind``, ``batch_id`` (the entry's
    subject), ``reason`` and ``signed_at_us`` (its time) taken from the entry itself."""
    unsigned = {k: v for k, v in detail.items() if k != "signature"}
    return canonical_json({**unsigned, "kind": KIND, "batch_id": batch_id, "reason": reason,
                           "signed_at_us": ts_us})  # fmt: skip


def _legacy_content(ts_us: int, user: str, reason: str, batch_id: str, detail: Mapping[str, Any]) -> bytes:
    """The signed content of a version-1 entry (the signer's name as typed, no chain head)."""
    return canonical_json(
        {"kind": KIND, "batch_id": batch_id, "user": user, "reason": reason, "signed_at_us": ts_us,
         "meaning": detail.get("meaning"), "report_sha256": detail.get("report_sha256")}
    )  # fmt: skip


def record_signature(
    recorder: AuditRecorder,
    batch_id: str,
    *,
    meaning: str,
    signer: Signer,
    report_sha256: str,
    key: SigningKey,
    reason: str = "",
    spec: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ChainRow:
    """Append the signature entry of ``batch_id``'s report to ``recorder``'s chain, signed
    by ``key`` over the chain's head at that moment (read under the chain's lock); returns
    the entry.  The caller has checked the key may sign for ``signer``.  ``extra`` fields
    (not overriding any above) join the detail, so the signature covers them too."""
    if meaning not in MEANINGS:
        raise SignatureError(f"meaning must be one of {', '.join(MEANINGS)}, not {meaning!r}")
    if not signer.user_id.strip() or not signer.full_name.strip():
        raise SignatureError("a signature needs the signer's user id and full name")

    def build(head: tuple[int, str], ts_us: int) -> list[tuple[int, str, str, str, str, str]]:
        detail: dict[str, Any] = {
            "v": VERSION,
            "batch_id": batch_id,
            "user_id": signer.user_id,
            "full_name": signer.full_name,
            "role": signer.role,
            "meaning": meaning,
            "report_sha256": report_sha256,
            "spec": dict(spec) if spec is not None else None,
            "chain_head": {"writer": recorder.writer_id, "seq": head[0], "hash": head[1]},
        }
        detail = {**(extra or {}), **detail}
        data = signed_content(ts_us, reason, batch_id, detail)
        detail["signature"] = signature_block(key.private, key.name, data)
        return [entry(ts_us, KIND, batch_id, detail, actor=signer.user_id, reason=reason)]

    (row,) = recorder.record_with(build)
    return row


@dataclass(frozen=True, slots=True)
class BatchSignature:
    """One signature entry of a batch, as read from the trail."""

    writer_id: str
    seq: int
    ts_us: int
    actor: str
    reason: str
    prev_hash: str
    detail: Mapping[str, Any]

    @classmethod
    def of_row(cls, row: ChainRow) -> BatchSignature:
        try:
            detail = json.loads(row.detail)
        except ValueError:
            detail = None
        return cls(row.writer_id, row.seq, row.ts, row.actor, row.reason, row.prev_hash,
                   detail if isinstance(detail, dict) else {})  # fmt: skip

    @property
    def batch_id(self) -> str:
        return str(self.detail.get("batch_id"))

    @property
    def key(self) -> str | None:
        block = self.detail.get("signature")
        name = block.get("key") if isinstance(block, Mapping) else None
        return name if isinstance(name, str) else None

    @property
    def user_id(self) -> str:
        return str(self.detail.get("user_id") or self.actor)

    @property
    def full_name(self) -> str:
        return str(self.detail.get("full_name") or self.actor)

    @property
    def meaning(self) -> str:
        return str(self.detail.get("meaning"))

    @property
    def report_sha256(self) -> str:
        return str(self.detail.get("report_sha256"))

    def spec(self) -> dict[str, Any] | None:
        spec = self.detail.get("spec")
        if isinstance(spec, Mapping):
            return dict(spec)
        return {"file": spec} if isinstance(spec, str) else None


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The judgement of one signature.

    ``verified``: the Ed25519 signature is valid, by a trusted key not revoked when it was
    made, for an identity that key may sign for, at its own place in the chain, not dated
    before the batch started (``why`` says what failed otherwise).  ``content``: whether
    the report is still what was signed -- ``"current"``, ``"data_changed"`` (same spec,
    other content), ``"spec_changed"`` (made with another spec), or ``"unknown"`` when no
    current content was given.  ``counts``: verified *and* current -- the only signatures
    that count toward review or approval."""

    verified: bool
    why: str
    content: str

    @property
    def counts(self) -> bool:
        return self.verified and self.content == "current"


def _identity_problem(sig: BatchSignature, key: TrustedKey) -> str | None:
    owner = key.owner
    if owner is None:
        return (
            f"key {key.name!r} has no enrolled owner (uns keys trust ... --full-name): it cannot sign records"
        )
    if owner.signs_for == "users":
        return None if sig.detail.get("v") == VERSION else f"service key {key.name!r} in an old-form entry"
    # version 1 named the signer only by the name typed
    new_form = sig.detail.get("v") == VERSION
    claimed = (sig.user_id, sig.full_name) if new_form else (owner.user_id, sig.actor)
    if claimed != (owner.user_id, owner.full_name):
        return (
            f"key {key.name!r} belongs to {owner.user_id} ({owner.full_name}), "
            f"not to {claimed[0]} ({claimed[1]})"
        )
    return None


def _verify(sig: BatchSignature, keyring: Mapping[str, TrustedKey], not_before_us: int | None) -> str:
    """Why ``sig`` is not verified ('' when it is)."""
    block = sig.detail.get("signature")
    if block is None:
        return "no key: an electronic note, not a signature (it does not count toward review or approval)"
    if sig.detail.get("v") == VERSION:
        head = sig.detail.get("chain_head")
        here = {"writer": sig.writer_id, "seq": sig.seq - 1, "hash": sig.prev_hash}
        if head != here:
            return "signed at another place in the audit trail (a copied or replayed entry)"
        data = signed_content(sig.ts_us, sig.reason, sig.batch_id, sig.detail)
    else:
        data = _legacy_content(sig.ts_us, sig.actor, sig.reason, sig.batch_id, sig.detail)
    try:
        name = verify_block(block, data, {n: k.public for n, k in keyring.items()})
    except SignatureError as exc:
        return exc.reason
    key = keyring[name]
    if not key.valid_at(sig.ts_us):
        assert key.revoked is not None
        return (
            f"made after key {name!r} was revoked (from {iso_us(key.revoked.from_us)}: "
            f"{key.revoked.reason or 'no reason given'})"
        )
    problem = _identity_problem(sig, key)
    if problem:
        return problem
    if not_before_us is not None and sig.ts_us < not_before_us:
        return "dated before the batch started (was the host clock wrong?)"
    return ""


def check_signature(
    sig: BatchSignature,
    keyring: Mapping[str, TrustedKey],
    *,
    current_sha256: str | None = None,
    current_spec: Mapping[str, Any] | None = None,
    not_before_us: int | None = None,
) -> SignatureCheck:
    """Judge ``sig`` against the trusted keys (with their revocations: merge those the trail
    recorded with :func:`revocations`) and, when given, the report content as it is now
    (``current_sha256``; ``current_spec``: the spec the report is read with, to tell a
    changed spec from changed data) and the batch's start (``not_before_us``)."""
    why = _verify(sig, keyring, not_before_us)
    if current_sha256 is None:
        content = "unknown"
    elif sig.report_sha256 == current_sha256:
        content = "current"
    elif current_spec is not None and not _same_spec(sig.spec(), current_spec):
        content = "spec_changed"
    else:
        content = "data_changed"
    return SignatureCheck(not why, why, content)


def _same_spec(signed: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    if signed is None:
        return current.get("file") is None and current.get("sha256") is None
    if signed.get("sha256") is not None and current.get("sha256") is not None:
        return bool(signed.get("sha256") == current.get("sha256"))
    return bool(signed.get("file") == current.get("file"))


def revocations(rows: Iterable[ChainRow]) -> dict[str, Revocation]:
    """The earliest revocation per key that the trail recorded (``key_revoked`` entries):
    a revocation stays in force even if its file left the trusted-keys directory."""
    out: dict[str, Revocation] = {}
    for row in rows:
        if row.kind != KEY_REVOKED:
            continue
        try:
            detail = json.loads(row.detail)
            found = Revocation(int(detail["from_us"]), row.reason)
        except (ValueError, KeyError, TypeError):
            continue
        if row.subject not in out or found.from_us < out[row.subject].from_us:
            out[row.subject] = found
    return out


def with_revocations(keyring: Mapping[str, TrustedKey], rows: Iterable[ChainRow]) -> dict[str, TrustedKey]:
    """``keyring`` with the revocations the trail recorded applied."""
    revoked = revocations(rows)
    return {name: key.with_revocation(revoked.get(name)) for name, key in keyring.items()}


_COLUMNS: Final = "writer_id, seq, epoch_us(ts), kind, actor, reason, subject, detail, prev_hash, hash"


def _rows(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[ChainRow]:
    found = con.execute(f"SELECT {_COLUMNS} FROM audit WHERE {where} ORDER BY ts, writer_id, seq", params)  # noqa: S608
    return [ChainRow(w, int(s), int(t), k, a or "", r or "", su or "", d or "", p, h)
            for w, s, t, k, a, r, su, d, p, h in found.fetchall()]  # fmt: skip


def batch_signatures(con: duckdb.DuckDBPyConnection, batch_id: str) -> list[BatchSignature]:
    """The signature entries of ``batch_id`` in the audit trail of ``con``'s lake, oldest first."""
    return [BatchSignature.of_row(row) for row in _rows(con, "kind = ? AND subject = ?", [KIND, batch_id])]


def trail_revocations(con: duckdb.DuckDBPyConnection) -> list[ChainRow]:
    """The ``key_revoked`` entries of ``con``'s lake (for :func:`with_revocations`)."""
    return _rows(con, "kind = ?", [KEY_REVOKED])


def signature_findings(
    chain: Sequence[ChainRow], keyring: Mapping[str, TrustedKey]
) -> tuple[int, int, list[str]]:
    """For ``uns audit verify``: (signatures verified, entries without a key, one line per
    signature entry that is not verified and why).  Revocations the trail recorded apply."""
    keys = with_revocations(keyring, chain)
    verified = notes = 0
    findings: list[str] = []
    for row in sorted(chain, key=lambda r: (r.writer_id, r.seq)):
        if row.kind != KIND:
            continue
        sig = BatchSignature.of_row(row)
        if not sig.detail:
            findings.append(f"{row.writer_id}#{row.seq}: signature entry with an unreadable detail")
            continue
        if "signature" not in sig.detail:
            notes += 1  # a note of the old, keyless form: never counts, listed as such by the report
            continue
        what = (
            f"{row.writer_id}#{row.seq}: signature of batch {row.subject} by {sig.full_name} ({sig.meaning})"
        )
        why = _verify(sig, keys, None)
        if why:
            findings.append(f"{what}: {why}")
        else:
            verified += 1
    return verified, notes, findings
