"""A batch's review as it is now: the report content, its dispositions, its signatures
judged, and the review state (:func:`review_of`).

The signatures are judged by :func:`uns.batch.signing.check_signature` (Ed25519 by a
trusted key not revoked, for the signer, at its own place in the trail; the report
content still what was signed).  A signature *counts* for the review state when that
judgement says so and, for ``reviewed`` and ``approved``, the dispositions are still the
ones it signed (their SHA-256 is part of the signed entry); a ``reviewed`` also needs every
exception of the report as it is now dispositioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uns.batch.dispositions import dispositions_of
from uns.batch.review import Disposition, Signed, current_dispositions, dispositions_sha256, review_state
from uns.batch.signing import (
    BatchSignature,
    SignatureCheck,
    check_signature,
    report_content_sha256,
    signature_dict,
    with_revocations,
)
from uns.batch.times import iso
from uns.lake.hashing import ChainRow

__all__ = ["BatchReview", "review_of"]


@dataclass(slots=True)
class BatchReview:
    """The report content (shared with the cache: never changed) and its review."""

    document: Mapping[str, Any]
    versions: Mapping[str, int]
    content_sha256: str
    dispositions: dict[str, Disposition]
    history: list[Disposition]
    signatures: list[dict[str, Any]]
    signed: list[Signed]
    state: str
    dispositions_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_id(self) -> str:
        return str(self.document["batch"]["batch_id"])

    @property
    def status(self) -> str:
        return str(self.document["batch"]["status"])

    def review_dict(self) -> dict[str, Any]:
        """The ``review`` object of the API (docs/contracts.md)."""
        exceptions = len(self.document["exceptions"])
        return {
            "state": self.state,
            "exceptions": exceptions,
            "dispositioned": len(self.dispositions),
            "open_exceptions": exceptions - len(self.dispositions),
            "content_sha256": self.content_sha256,
            "dispositions_sha256": self.dispositions_sha256,
            "dispositions": [_disposition(d) for _, d in sorted(self.dispositions.items())],
            "signatures": [_manifest(s) for s in self.signatures],
        }

    def report(self) -> dict[str, Any]:
        """The report JSON as the lake is now, with ``signatures``, ``content_sha256`` and ``review``."""
        out = dict(self.document)
        out["signatures"] = self.signatures
        out["content_sha256"] = self.content_sha256
        out["review"] = self.review_dict()
        return out

    def summary(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "review": self.review_dict()}


def _disposition(d: Disposition) -> dict[str, Any]:
    return {
        "exception_id": d.exception_id,
        "decision": d.decision,
        "comment": d.comment,
        "deviation_ref": d.deviation_ref,
        "user": d.user,
        "full_name": d.full_name,
        "time": iso(d.ts_us // 1000),
    }


def _manifest(s: Mapping[str, Any]) -> dict[str, Any]:
    """A signature as the review object lists it (its manifestation, §11.50)."""
    return {
        "user": s["user"],
        "full_name": s["full_name"],
        "role": s.get("role"),
        "meaning": s["meaning"],
        "time": s["signed_at"],
        "reason": s["reason"],
        "report_sha256": s["report_sha256"],
        "verified": s["verified"],
        "counts": s["counts_for_review"],
        "why": s.get("why") or s.get("stale") or "",
    }


def _start_us(document: Mapping[str, Any]) -> int | None:
    from datetime import datetime  # noqa: PLC0415

    start = document["batch"].get("start")
    if not start:
        return None
    moment = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return int(moment.timestamp() * 1_000_000)


def review_of(
    document: Mapping[str, Any],
    versions: Mapping[str, int],
    rows: Sequence[ChainRow],
    keyring: Mapping[str, Any],
    *,
    revocations: Sequence[ChainRow] = (),
    spec: Mapping[str, Any] | None = None,
) -> BatchReview:
    """The review of ``document`` (the report content as the lake is now) from the batch's
    review entries ``rows`` (dispositions and signatures), the trusted keys and the
    revocations the trail recorded."""
    content = report_content_sha256(dict(document))
    ids = [e["id"] for e in document["exceptions"]]
    history = dispositions_of(rows)
    current = current_dispositions(history, ids)
    digest = dispositions_sha256(current)
    keys = with_revocations(keyring, revocations)
    start = _start_us(document)
    listed: list[dict[str, Any]] = []
    signed: list[Signed] = []
    for row in rows:
        if row.kind != "signature":
            continue
        sig = BatchSignature.of_row(row)
        check: SignatureCheck = check_signature(
            sig, keys, current_sha256=content, current_spec=spec, not_before_us=start
        )
        counts, stale = _counts(sig, check, digest, current, ids)
        entry = signature_dict(sig, check) | {"counts_for_review": counts, "stale": stale}
        listed.append(entry)
        signed.append(Signed(sig.user_id, sig.meaning, check.verified, counts))
    return BatchReview(
        document=document,
        versions=versions,
        content_sha256=content,
        dispositions=current,
        history=history,
        signatures=listed,
        signed=signed,
        state=review_state(signed, bool(history)),
        dispositions_sha256=digest,
    )


def _counts(
    sig: BatchSignature,
    check: SignatureCheck,
    digest: str,
    current: Mapping[str, Disposition],
    ids: Sequence[str],
) -> tuple[bool, str]:
    """Whether a signature counts for the review state now, and if not, why."""
    if not check.verified:
        return False, check.why
    if not check.counts:
        return False, "the report content changed after it was signed"
    if sig.meaning in ("reviewed", "approved"):
        signed_digest = sig.detail.get("dispositions_sha256") or dispositions_sha256({})
        if signed_digest != digest:
            return False, "the dispositions changed after it was signed"
        if sig.meaning == "reviewed" and len(current) < len(ids):
            return False, "not every exception is dispositioned"
    return True, ""
