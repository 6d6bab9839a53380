"""The life cycle of signing keys, as audited administrative acts (``uns keys trust|revoke``).

Trusting a key writes ``<name>.pub`` and ``<name>.owner.json`` into the trusted-keys
directory (:mod:`uns.keyring`) and records a ``key_trusted`` entry (the key's
fingerprint and public key, its owner, who trusted it and why) in the chain of what is
run by hand; revoking writes ``<name>.revoked.json`` and records ``key_revoked`` (from
when, why, by whom).  Signatures made before the revocation time stay valid, later ones
fail -- in ``uns audit verify`` and in every report, which apply the revocations the
trail recorded even if the file is gone.  Files are never replaced (``O_EXCL``); if the
audit entry cannot be written, the files just written are removed again: no key is
trusted or revoked without its entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from uns.audit.signatures import KEY_REVOKED, KEY_TRUSTED, iso_us
from uns.core.signing import check_key_name
from uns.errors import SignatureError, UnsError
from uns.keyring import (
    OWNER_SUFFIX,
    PUBLIC_SUFFIX,
    REVOKED_SUFFIX,
    SIGNS_FOR,
    KeyOwner,
    Revocation,
    TrustedKey,
    fingerprint,
    load_keyring,
    load_public_key,
    write_once,
)
from uns.lake.audit_entries import entry, os_user
from uns.lake.storage import LakeStore

__all__ = ["revoke_key", "trust_key"]


def _directory(trusted_dir: str | Path | None) -> Path:
    if not trusted_dir:
        raise SignatureError(
            "no trusted-keys directory: set audit.trusted_keys in the config (or UNS_AUDIT_TRUSTED_KEYS)"
        )
    root = Path(trusted_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SignatureError(f"cannot make the trusted-keys directory {root}: {exc.strerror or exc}") from exc
    return root


def _record(lake: str | Path | LakeStore, audit: Any, kind: str, name: str, detail: dict[str, Any],
            reason: str, actor: str | None, written: list[Path]) -> int:  # fmt: skip
    """The act's audit entry; the files of the act are removed again when it cannot be written."""
    from uns.lake.manual import cli_recorder  # noqa: PLC0415 - the commit machinery, on demand

    try:
        recorder = cli_recorder(lake, audit=audit)
        (row,) = recorder.record_with(
            lambda _head, now: [
                entry(now, kind, name, detail | {"at": iso_us(now)}, actor=actor or os_user(), reason=reason)
            ]
        )
    except UnsError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return row.seq


def trust_key(
    lake: str | Path | LakeStore,
    public_file: str | Path,
    *,
    name: str,
    full_name: str,
    reason: str,
    trusted_dir: str | Path | None,
    user_id: str | None = None,
    role: str | None = None,
    signs_for: str = "owner",
    actor: str | None = None,
    audit: Any = None,
) -> tuple[TrustedKey, int]:
    """Trust the Ed25519 public key of ``public_file`` as key ``name`` of ``user_id``
    (default: the key's name) with the printed name ``full_name``; ``signs_for="users"``
    makes it a service's key (the web workspace's).  Returns the key and its entry's seq."""
    check_key_name(name)
    if not full_name.strip():
        raise SignatureError("a trusted key needs its owner's full name (--full-name)")
    if not reason.strip():
        raise SignatureError("trusting a key needs a reason (--reason)")
    if signs_for not in SIGNS_FOR:
        raise SignatureError(f"signs_for must be one of {', '.join(SIGNS_FOR)}")
    public = load_public_key(public_file)
    root = _directory(trusted_dir)
    for known in load_keyring(root).values():
        if known.fingerprint == fingerprint(public):
            raise SignatureError(f"this public key is trusted already, as {known.name!r}")
    owner = KeyOwner(user_id or name, full_name.strip(), role, signs_for)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    detail = {"key": name, "fingerprint": fingerprint(public), **owner.to_dict()}
    written: list[Path] = []
    write_once(root / f"{name}{PUBLIC_SUFFIX}", pem)
    written.append(root / f"{name}{PUBLIC_SUFFIX}")
    try:
        text = json.dumps({"key": name, **detail}, indent=2, sort_keys=True) + "\n"
        write_once(root / f"{name}{OWNER_SUFFIX}", text.encode())
        written.append(root / f"{name}{OWNER_SUFFIX}")
    except SignatureError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    seq = _record(
        lake, audit, KEY_TRUSTED, name, detail | {"public_key": pem.decode()}, reason, actor, written
    )
    return TrustedKey(name, public, owner), seq


def revoke_key(
    lake: str | Path | LakeStore,
    name: str,
    *,
    from_us: int,
    reason: str,
    trusted_dir: str | Path | None,
    actor: str | None = None,
    audit: Any = None,
) -> tuple[TrustedKey, int]:
    """Revoke key ``name`` from ``from_us`` (epoch microseconds) on: its signatures made
    from then on fail, earlier ones stay valid.  Returns the key and its entry's seq."""
    if not reason.strip():
        raise SignatureError("revoking a key needs a reason (--reason)")
    root = _directory(trusted_dir)
    key = load_keyring(root).get(check_key_name(name))
    if key is None:
        raise SignatureError(f"no trusted key {name!r} in {root}")
    if key.revoked is not None:
        raise SignatureError(f"key {name!r} is revoked already, from {iso_us(key.revoked.from_us)}")
    detail = {"key": name, "fingerprint": key.fingerprint, "from_us": from_us, "from": iso_us(from_us)}
    path = root / f"{name}{REVOKED_SUFFIX}"
    write_once(path, (json.dumps(detail | {"reason": reason}, indent=2, sort_keys=True) + "\n").encode())
    seq = _record(lake, audit, KEY_REVOKED, name, detail, reason, actor, [path])
    return key.with_revocation(Revocation(from_us, reason)), seq
