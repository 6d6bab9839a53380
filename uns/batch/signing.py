"""``uns batch sign``: sign a batch's report in the audit trail; the report's signatures.

**What is signed** is the report's *content*: the report document (the JSON form,
``schemas/batch-report.schema.json``) without what changes with every rendering --
``batch.report_time``, ``batch.lake_versions`` (they move whenever anything is
committed), the ``signatures`` themselves and the ``audit_trail`` (each report made
and each signature is an entry of it) -- as canonical JSON (sorted keys, no
spaces, UTF-8), hashed with SHA-256 (:func:`report_content_sha256`).  The same data
and the same spec give the same hash, whatever the format or time of the report; a
changed value, a late context correction, a new exception change it, and the report
then says that the signature no longer covers the report as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final

import duckdb

from uns import lake
from uns.audit.signatures import batch_signatures, record_signature
from uns.batch.times import iso
from uns.errors import SignatureError

__all__ = ["VOLATILE_HEADER", "attach_signatures", "report_content_sha256", "sign_batch"]

#: header fields that differ between two renderings of the same content
VOLATILE_HEADER: Final = ("report_time", "lake_versions")
#: what a signature does not cover: the signatures, the hash itself and the audit trail
#: (every generated report and every signature is an entry of it)
UNSIGNED: Final = ("signatures", "content_sha256", "audit_trail")


def report_content_sha256(document: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the report content a signature covers (see the module doc)."""
    content = {k: v for k, v in document.items() if k not in UNSIGNED}
    content["batch"] = {k: v for k, v in document["batch"].items() if k not in VOLATILE_HEADER}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def attach_signatures(con: duckdb.DuckDBPyConnection, document: dict[str, Any]) -> None:
    """Add ``signatures`` (every signature of the batch, each saying whether it covers the
    report as it is now) and ``content_sha256`` to the report document."""
    current = report_content_sha256(document)
    batch_id = document["batch"]["batch_id"]
    signatures = [s.to_dict(current) for s in batch_signatures(con, batch_id)]
    for signature in signatures:
        signature["signed_at"] = iso(signature["signed_at"] // 1000)
    document["signatures"] = signatures
    document["content_sha256"] = current


def _signing_key(key_file: str, trusted_dir: str | None) -> tuple[str, Any]:
    """The key to sign with, refused unless its public half is a trusted key of that name."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from uns.keyring import load_private_key, load_trusted_keys  # noqa: PLC0415

    name, private = load_private_key(key_file)
    trusted = load_trusted_keys(trusted_dir)
    public = trusted.get(name)
    if public is None:
        raise SignatureError(
            f"key {name!r} is not trusted: no {name}.pub in the trusted-keys directory "
            f"({trusted_dir or 'audit.trusted_keys is not set'})"
        )
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if private.public_key().public_bytes(*raw) != public.public_bytes(*raw):
        raise SignatureError(f"{key_file} is not the private half of the trusted key {name}.pub")
    return name, private


def sign_batch(
    cfg: Any,
    document: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]],
    batch_id: str,
    *,
    meaning: str,
    user: str,
    reason: str | None,
    key: str | None,
    spec_file: str | None,
) -> tuple[int, str]:
    """Sign ``batch_id``'s report (``document(con)`` builds it) as ``user`` with ``meaning``;
    returns (the entry's seq in the uns-cli chain, the report content's SHA-256)."""
    signing = _signing_key(key, cfg.audit.trusted_keys) if key is not None else None
    con = lake.connect(cfg.lake.path)
    try:
        sha = report_content_sha256(document(con))
    finally:
        con.close()
    seq = record_signature(
        cfg.lake.path,
        batch_id,
        meaning=meaning,
        user=user,
        reason=reason or "",
        report_sha256=sha,
        key=signing,
        extra={"spec": spec_file},
    )
    return seq, sha
