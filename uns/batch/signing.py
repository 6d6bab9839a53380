"""Signing a batch's report, and the report's signatures judged (``uns batch sign``, the web
workspace).

**What is signed** is the report's *content*: the report document (the JSON form,
``schemas/batch-report.schema.json``) without what changes with every rendering --
``batch.report_time``, ``batch.lake_versions`` (they move whenever anything is
committed), the ``signatures`` themselves, the ``audit_trail`` (each report made
and each signature is an entry of it) and the ``time_sync`` read from it -- as canonical JSON (sorted keys, no
spaces, UTF-8), hashed with SHA-256 (:func:`report_content_sha256`).  The same data
and the same spec give the same hash, whatever the format or time of the report.

The library API both faces use (keep it stable: the web workspace builds on it):

- :func:`sign_report` signs what the reviewer read: given ``expect_sha256`` (the
  ``content_sha256`` of the report the signer saw) it refuses when the content is no
  longer that; the signer is an authenticated identity (:class:`Signer`: user id, full
  name, role) that the key must be allowed to sign for (its enrolled owner, or any user
  for a service key such as the web workspace's);
- :func:`signer_of_key` is that identity for the command line: a key's enrolled owner;
- :func:`signing_key` loads a private key and checks it is trusted and not revoked;
- :func:`check_signature` (re-exported from :mod:`uns.audit.signatures`) judges one
  signature against the trusted keys, their revocations and the report as it is now;
- :func:`attach_signatures` lists every signature of the batch in a report, judged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from uns import lake
from uns.audit.signatures import (
    BatchSignature,
    SignatureCheck,
    Signer,
    SigningKey,
    batch_signatures,
    check_signature,
    iso_us,
    record_signature,
    trail_revocations,
    with_revocations,
)
from uns.errors import SignatureError
from uns.keyring import TrustedKey, fingerprint, load_keyring, load_private_key
from uns.lake.audit import CLI_WRITER
from uns.lake.storage import LakeStore

__all__ = [
    "VOLATILE_HEADER",
    "SignResult",
    "SignatureCheck",
    "Signer",
    "SigningKey",
    "attach_signatures",
    "check_signature",
    "key_may_sign",
    "report_content_sha256",
    "sign_report",
    "signer_of_key",
    "signing_key",
]

#: header fields that differ between two renderings of the same content
VOLATILE_HEADER: Final = ("report_time", "lake_versions")
#: what a signature does not cover: the signatures, the hash itself, the audit trail (every
#: generated report and every signature is an entry of it), the time synchronisation read
#: from it, and the review (made of entries)
UNSIGNED: Final = ("signatures", "content_sha256", "audit_trail", "time_sync", "review")


def report_content_sha256(document: dict[str, Any]) -> str:
    """The SHA-256 (hex) of the report content a signature covers (see the module doc)."""
    content = {k: v for k, v in document.items() if k not in UNSIGNED}
    content["batch"] = {k: v for k, v in document["batch"].items() if k not in VOLATILE_HEADER}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _start_us(document: Mapping[str, Any]) -> int | None:
    start = document.get("batch", {}).get("start")
    if not start:
        return None
    moment = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def signature_dict(sig: BatchSignature, check: SignatureCheck) -> dict[str, Any]:
    """One signature as the report lists it (``schemas/batch-report.schema.json``)."""
    return {
        "signed_at": iso_us(sig.ts_us),
        "user": sig.user_id,
        "full_name": sig.full_name,
        "role": sig.detail.get("role"),
        "meaning": sig.meaning,
        "reason": sig.reason,
        "report_sha256": sig.report_sha256,
        "key": sig.key,
        "writer_id": sig.writer_id,
        "seq": sig.seq,
        "spec": sig.spec(),
        "verified": check.verified,
        "why": check.why,
        "content": check.content,
        "covers_current": check.content == "current",
        "counts": check.counts,
    }


def attach_signatures(
    con: duckdb.DuckDBPyConnection,
    document: dict[str, Any],
    *,
    keyring: Mapping[str, TrustedKey] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> None:
    """Add ``signatures`` (every signature entry of the batch, each judged by
    :func:`check_signature` against ``keyring`` -- with the revocations the trail holds --
    and against the report as it is now, read with ``spec``) and ``content_sha256``."""
    current = report_content_sha256(document)
    keys = with_revocations(keyring or {}, trail_revocations(con))
    start = _start_us(document)
    out = []
    for sig in batch_signatures(con, document["batch"]["batch_id"]):
        check = check_signature(sig, keys, current_sha256=current, current_spec=spec, not_before_us=start)
        out.append(signature_dict(sig, check))
    document["signatures"] = out
    document["content_sha256"] = current


def signing_key(
    key_file: str | Path, keyring: Mapping[str, TrustedKey], *, passphrase: bytes | None = None
) -> tuple[SigningKey, TrustedKey]:
    """The private key of ``key_file`` and its trusted entry; refused unless its public half
    is trusted under its name and the key is not revoked now."""
    name, private = load_private_key(key_file, passphrase)
    trusted = keyring.get(name)
    if trusted is None:
        raise SignatureError(
            f"key {name!r} is not trusted: an administrator trusts it with "
            f"`uns keys trust {name}.pub --name {name} --full-name ...`"
        )
    if fingerprint(private.public_key()) != trusted.fingerprint:
        raise SignatureError(f"{key_file} is not the private half of the trusted key {name}.pub")
    if not trusted.valid_at(time.time_ns() // 1000):
        raise SignatureError(f"key {name!r} is revoked")
    return SigningKey(name, private), trusted


def key_may_sign(key: TrustedKey, signer: Signer) -> None:
    """SignatureError unless ``key`` may sign for ``signer``: its enrolled owner, or any user
    for a service key (``signs_for = "users"``)."""
    owner = key.owner
    if owner is None:
        raise SignatureError(
            f"key {key.name!r} has no enrolled owner: trust it with `uns keys trust ... --full-name NAME`"
        )
    if owner.signs_for == "users":
        return
    if (signer.user_id, signer.full_name) != (owner.user_id, owner.full_name):
        raise SignatureError(
            f"key {key.name!r} belongs to {owner.user_id} ({owner.full_name}): "
            f"it cannot sign as {signer.user_id} ({signer.full_name})"
        )


def signer_of_key(key: TrustedKey, user: str | None = None) -> Signer:
    """The command line's signer: the enrolled owner of the key.  ``user`` (``--user``), if
    given, must be the owner's user id; a service key cannot sign from the command line."""
    owner = key.owner
    if owner is None:
        raise SignatureError(
            f"key {key.name!r} has no enrolled owner: trust it with `uns keys trust ... --full-name NAME`"
        )
    if owner.signs_for == "users":
        raise SignatureError(
            f"key {key.name!r} is a service's key (it signs for the users the web workspace "
            "authenticates): sign with your own key"
        )
    if user is not None and user not in (owner.user_id, owner.full_name):
        raise SignatureError(f"--user {user!r} is not the owner of key {key.name!r} ({owner.user_id})")
    return Signer(owner.user_id, owner.full_name, owner.role)


@dataclass(frozen=True, slots=True)
class SignResult:
    """A signature made: its audit entry (writer, seq, time) and what it signed."""

    seq: int
    report_sha256: str
    writer_id: str = CLI_WRITER
    signed_at: str = ""
    signer: Signer | None = None
    key: str = ""


def sign_report(
    lake_location: str | Path | LakeStore,
    batch_id: str,
    *,
    document: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]],
    signer: Signer,
    meaning: str,
    reason: str,
    key: SigningKey,
    keyring: Mapping[str, TrustedKey],
    expect_sha256: str | None,
    spec: Mapping[str, Any] | None = None,
    writer_id: str = CLI_WRITER,
    audit: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> SignResult:
    """Sign ``batch_id``'s report (``document(con)`` builds it from a lake snapshot) as
    ``signer`` with ``meaning``, ``reason`` and ``key`` (trusted in ``keyring``, allowed to
    sign for ``signer``).  With ``expect_sha256`` it signs only if the report content
    still has that SHA-256 -- what the signer read.  Refused (SignatureError) when the
    host clock is before the batch's start.  The entry goes into ``writer_id``'s chain
    (``audit``: the config's ``[audit]`` section, for its anchor); ``extra`` fields join the
    signed content (the web workspace: the SHA-256 of the dispositions signed).  Returns
    what was made."""
    from uns.lake.manual import cli_recorder  # noqa: PLC0415 - the commit machinery, on demand

    con = lake.connect(lake_location)
    try:
        keys = with_revocations(keyring, trail_revocations(con))
        trusted = keys.get(key.name)
        if trusted is None or trusted.fingerprint != fingerprint(key.private.public_key()):
            raise SignatureError(f"key {key.name!r} is not trusted (or not this private key's)")
        key_may_sign(trusted, signer)
        doc = document(con)
    finally:
        con.close()
    sha = report_content_sha256(doc)
    if expect_sha256 is not None and sha != expect_sha256.strip().lower():
        raise SignatureError(
            f"the report content changed since it was read: its SHA-256 is now {sha}, not {expect_sha256}; "
            "read the report again before signing"
        )
    start = _start_us(doc)
    recorder = cli_recorder(lake_location, writer_id=writer_id, audit=audit)
    now = recorder.clock()
    if not trusted.valid_at(now):
        raise SignatureError(f"key {key.name!r} is revoked")
    if start is not None and now < start:
        raise SignatureError(
            f"the host clock says {iso_us(now)}, before batch {batch_id} started ({iso_us(start)}): "
            "check the time synchronisation before signing"
        )
    row = record_signature(
        recorder, batch_id, meaning=meaning, signer=signer, report_sha256=sha, key=key, reason=reason,
        spec=spec, extra=extra,
    )  # fmt: skip
    return SignResult(row.seq, sha, row.writer_id, iso_us(row.ts), signer, key.name)


def load_signing(
    key_file: str | Path, trusted_dir: str | None, *, passphrase: bytes | None = None
) -> tuple[SigningKey, TrustedKey, dict[str, TrustedKey]]:
    """The key of ``key_file``, its trusted entry and the keyring of ``trusted_dir``."""
    keyring = load_keyring(trusted_dir)
    if not keyring:
        raise SignatureError(
            f"no trusted key in {trusted_dir}" if trusted_dir
            else "no trusted keys: set audit.trusted_keys (UNS_AUDIT_TRUSTED_KEYS)"
        )  # fmt: skip
    key, trusted = signing_key(key_file, keyring, passphrase=passphrase)
    return key, trusted, keyring
