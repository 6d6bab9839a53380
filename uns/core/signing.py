"""Ed25519 signatures over canonical JSON: context events and signed records (pure).

**Canonical form** (what is signed, byte for byte): the JSON text of a value with
object keys sorted, no spaces (``","`` and ``":"`` as separators), non-ASCII
characters as themselves, encoded as UTF-8.  Numbers are written as Python's
``json`` writes them (integers as digits).  Any change to any byte of the
signed content changes the canonical form, and so fails verification.

**A signed context event** carries a ``signature`` field::

    {"ts": ..., "set": {...}, ..., "signature": {"alg": "Ed25519", "key": "qa-line1",
                                                 "sig": "<base64 of 64 bytes>"}}

The signature covers the canonical form of ``{"path": <ISA-95 path>, "event":
<the event without its "signature">}`` -- so it binds the event to the path it
was published for, and cannot be moved to another one.  ``key`` names the
signer's public key among the trusted keys (the file ``<key>.pub`` in the
directory of ``audit.trusted_keys``, see :mod:`uns.keyring`).

Keys are :mod:`cryptography` Ed25519 objects; reading and writing key files is
:mod:`uns.keyring`'s job, so this module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from uns.errors import SignatureError

__all__ = [
    "ALGORITHM",
    "SIGNATURE_FIELD",
    "SignatureError",
    "canonical_json",
    "check_key_name",
    "event_signing_bytes",
    "sign_bytes",
    "sign_event",
    "signature_block",
    "verify_block",
    "verify_event",
]

ALGORITHM: Final = "Ed25519"
SIGNATURE_FIELD: Final = "signature"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SIGNATURE_BYTES = 64


def check_key_name(name: object) -> str:
    """A key name: 1-64 of letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit
    (it names the file ``<name>.pub``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SignatureError(
            f"bad key name {name!r:.80}: 1-64 letters, digits, '.', '_', '-' (first a letter or digit)"
        )
    return name


def canonical_json(value: object) -> bytes:
    """The canonical form of ``value`` (see the module doc); SignatureError if it is not JSON."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"cannot put the content in canonical form: {exc}") from exc
    return text.encode("utf-8", "surrogatepass")


def event_signing_bytes(path: str, event: Mapping[str, Any]) -> bytes:
    """What the signature of a context event on ``path`` covers."""
    unsigned = {k: v for k, v in event.items() if k != SIGNATURE_FIELD}
    return canonical_json({"path": path.strip("/"), "event": unsigned})


def sign_bytes(private_key: Ed25519PrivateKey, data: bytes) -> str:
    """The base64 text of the Ed25519 signature of ``data``."""
    return base64.b64encode(private_key.sign(data)).decode("ascii")


def signature_block(private_key: Ed25519PrivateKey, key_name: str, data: bytes) -> dict[str, str]:
    """``{"alg", "key", "sig"}``: the signature of ``data`` by the key named ``key_name``."""
    return {"alg": ALGORITHM, "key": check_key_name(key_name), "sig": sign_bytes(private_key, data)}


def sign_event(
    private_key: Ed25519PrivateKey, key_name: str, path: str, event: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``event`` with its ``signature`` (any earlier one replaced)."""
    unsigned = {k: v for k, v in event.items() if k != SIGNATURE_FIELD}
    block = signature_block(private_key, key_name, event_signing_bytes(path, unsigned))
    return {**unsigned, SIGNATURE_FIELD: block}


def verify_block(block: object, data: bytes, trusted: Mapping[str, Ed25519PublicKey]) -> str:
    """The name of the trusted key whose signature ``block`` is of ``data``; otherwise
    :class:`SignatureError` saying why (malformed, untrusted key, does not verify)."""
    if not isinstance(block, Mapping):
        raise SignatureError('the signature must be an object {"alg", "key", "sig"}')
    unknown = set(block) - {"alg", "key", "sig"}
    if unknown:
        raise SignatureError(f"unknown signature fields {sorted(unknown)}")
    if block.get("alg") != ALGORITHM:
        raise SignatureError(f"signature algorithm must be {ALGORITHM!r}, not {block.get('alg')!r:.40}")
    name = check_key_name(block.get("key"))
    raw = block.get("sig")
    try:
        signature = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != _SIGNATURE_BYTES or base64.b64encode(signature).decode("ascii") != raw:
        # one spelling only: the last digit's unused bits could otherwise vary
        raise SignatureError(f"signature by key {name!r} is not base64 of {_SIGNATURE_BYTES} bytes")
    public = trusted.get(name)
    if public is None:
        raise SignatureError(f"signed by key {name!r}, which is not among the trusted keys")
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(
            f"bad signature: the content does not match its signature by key {name!r}"
        ) from None
    return name


def verify_event(
    path: str, event: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey], *, required: bool
) -> str | None:
    """The signer's key name of a context event on ``path``, None for an unsigned event
    when no signature is ``required``.  A present signature is always checked: it must
    be by a trusted key and cover the event as received, else :class:`SignatureError`."""
    if SIGNATURE_FIELD not in event:
        if required:
            raise SignatureError("unsigned event: context.require_signature is on")
        return None
    return verify_block(event[SIGNATURE_FIELD], event_signing_bytes(path, event), trusted)
