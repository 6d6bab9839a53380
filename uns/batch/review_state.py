"""A batch's review as it is now: the report content, its dispositions, its signatures
judged, and the review state (:func:`review_of`); the report's ``review`` object.

The signatures are judged by :func:`uns.batch.signing.check_signature` (Ed25519 by a
trusted key not revoked, for the signer, at its own place in the trail; the report
content still what was signed).  A signature *counts* for the review state when that
judgement says so and, for ``reviewed`` and ``approved``, the dispositions are still the
ones it signed (their SHA-256, ``dispositions_sha256``, is part of the signed entry; a
signature without it signed no disposition); a ``reviewed`` also needs every exception
of the report as it is now dispositioned.  Every report (``uns batch report``, the web
workspace) carries this object, so the HTML and PDF show the state and each signature's
manifestation (§11.50) beside the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from uns.audit.signatures import BatchSignature, SignatureCheck, with_revocations
from uns.batch.dispositions import dispositions_of
from uns.batch.review import Disposition, Signed, current_dispositions, dispositions_sha256, review_state
from uns.batch.signing import check_signature, report_content_sha256, signature_dict
from uns.batch.times import iso
from uns.lake.hashing import ChainRow

if TYPE_CHECKING:
    import duckdb

__all__ = ["REVIEW_KINDS", "BatchReview", "attach_review", "review_of"]

#: the entries a batch's review is made of (their subject is the batch id)
REVIEW_KINDS: Final = ("disposition", "signature")


@dataclass(slots=True)
class BatchReview:
    """The report content (shared with a cache: never changed here) and its review."""

    document: Mapping[str, Any]
    content_sha256: str
    dispositions: dict[str, Disposition]
    signatures: list[dict[str, Any]]  # as the report lists them (schemas/batch-report.schema.json)
    judged: list[tuple[bool, str]]  # per signature: counts for the review now, and if not why
    signed: list[Signed]
    state: str
    dispositions_sha256: str

    @property
    def batch_id(self) -> str:
        return str(self.document["batch"]["batch_id"])

    @property
    def status(self) -> str:
        return str(self.document["batch"]["status"])

    def review_dict(self) -> dict[str, Any]:
        """The report's ``review`` object (docs/contracts.md)."""
        exceptions = len(self.document["exceptions"])
        return {
            "state": self.state,
            "exceptions": exceptions,
            "dispositioned": len(self.dispositions),
            "open_exceptions": exceptions - len(self.dispositions),
            "content_sha256": self.content_sha256,
            "dispositions_sha256": self.dispositions_sha256,
            "dispositions": [_disposition(d) for _, d in sorted(self.dispositions.items())],
            "signatures": [
                _manifest(s, c, why) for s, (c, why) in zip(self.signatures, self.judged, strict=True)
            ],
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


def _manifest(s: Mapping[str, Any], counts: bool, why: str) -> dict[str, Any]:
    """A signature's manifestation (§11.50: printed name, date and time, meaning) and its check."""
    return {
        "user": s["user"],
        "full_name": s["full_name"],
        "role": s["role"],
        "meaning": s["meaning"],
        "time": s["signed_at"],
        "reason": s["reason"],
        "report_sha256": s["report_sha256"],
        "verified": s["verified"],
        "counts": counts,
        "why": why,
    }


def _start_us(document: Mapping[str, Any]) -> int | None:
    from datetime import datetime  # noqa: PLC0415

    start = document["batch"].get("start")
    if not start:
        return None
    moment = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return round(moment.timestamp() * 1_000_000)


def review_of(
    document: Mapping[str, Any],
    rows: Sequence[ChainRow],
    keyring: Mapping[str, Any],
    *,
    revocations: Sequence[ChainRow] = (),
    spec: Mapping[str, Any] | None = None,
) -> BatchReview:
    """The review of ``document`` (the report content as the lake is now) from the batch's
    review entries ``rows`` (its dispositions and signatures, oldest first), the trusted
    keys, the revocations the trail recorded and the spec the report was read with."""
    content = report_content_sha256(dict(document))
    ids = [e["id"] for e in document["exceptions"]]
    history = dispositions_of(rows)
    current = current_dispositions(history, ids)
    digest = dispositions_sha256(current)
    keys = with_revocations(keyring, revocations)
    start = _start_us(document)
    listed: list[dict[str, Any]] = []
    judged: list[tuple[bool, str]] = []
    signed: list[Signed] = []
    for row in rows:
        if row.kind != "signature":
            continue
        sig = BatchSignature.of_row(row)
        check = check_signature(sig, keys, current_sha256=content, current_spec=spec, not_before_us=start)
        counts, why = _counts(sig, check, digest, len(current) == len(ids))
        listed.append(signature_dict(sig, check))
        judged.append((counts, why))
        signed.append(Signed(sig.user_id, sig.meaning, check.verified, counts))
    return BatchReview(
        document=document,
        content_sha256=content,
        dispositions=current,
        signatures=listed,
        judged=judged,
        signed=signed,
        state=review_state(signed, bool(history)),
        dispositions_sha256=digest,
    )


def _counts(sig: BatchSignature, check: SignatureCheck, digest: str, all_done: bool) -> tuple[bool, str]:
    """Whether a signature counts for the review state now, and if not, why."""
    if not check.verified:
        return False, check.why
    if not check.counts:
        return False, "the report changed after it was signed"
    if sig.meaning in ("reviewed", "approved"):
        if (sig.detail.get("dispositions_sha256") or dispositions_sha256({})) != digest:
            return False, "the dispositions changed after it was signed"
        if sig.meaning == "reviewed" and not all_done:
            return False, "not every exception is dispositioned"
    return True, ""


def attach_review(
    con: duckdb.DuckDBPyConnection,
    document: dict[str, Any],
    keyring: Mapping[str, Any],
    spec: Mapping[str, Any] | None,
) -> None:
    """Add the ``review`` object to a report document, its entries read from ``con``'s snapshot."""
    from uns.audit.signatures import trail_revocations  # noqa: PLC0415

    cols = "writer_id, seq, epoch_us(ts), kind, actor, reason, subject, detail, prev_hash, hash"
    found = con.execute(
        f"SELECT {cols} FROM audit WHERE subject = ? AND kind IN (?, ?) ORDER BY ts, writer_id, seq",  # noqa: S608
        [document["batch"]["batch_id"], *REVIEW_KINDS],
    ).fetchall()
    rows = [ChainRow(w, int(s), int(t), k, a or "", r or "", su or "", d or "{}", p, h)
            for w, s, t, k, a, r, su, d, p, h in found]  # fmt: skip
    review = review_of(document, rows, keyring, revocations=trail_revocations(con), spec=spec)
    document["review"] = review.review_dict()
