"""Ed25519 key files: new key pairs, private keys (optionally encrypted), and the keyring of
trusted public keys with their owners and revocations.

- A **private key** is a PEM file (PKCS#8), either encrypted with a passphrase
  (``uns keys new --passphrase-stdin``) or plain; a plain one must be readable by its
  owner only (mode 0600; one readable by group or others is refused, as ssh does).  Its
  name is the file's name without ``.key``: ``qa-jdoe.key`` signs as key ``qa-jdoe``.
- The **trusted keys** live in the directory of the config key ``audit.trusted_keys``:

  ``<name>.pub``           the public key (PEM SubjectPublicKeyInfo): the key is trusted
  ``<name>.owner.json``    who it belongs to (:class:`KeyOwner`): user id, full name, role,
                           and whether it signs for its owner only or, as the web
                           workspace's own key, for the users that workspace authenticates
  ``<name>.revoked.json``  the revocation: from when on its signatures no longer count

  Only ``uns keys trust`` and ``uns keys revoke`` (:mod:`uns.audit.keys`) write them,
  each an entry of the audit trail; ``uns keys new`` never trusts its key.  A revoked
  key's ``.pub`` stays: signatures made before the revocation time remain verifiable.
  Files are written once (``O_EXCL``), never replaced.

The signatures themselves are :mod:`uns.core.signing`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from uns.core.signing import check_key_name
from uns.errors import SignatureError

__all__ = [
    "OWNER_SUFFIX",
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "REVOKED_SUFFIX",
    "SIGNS_FOR",
    "KeyOwner",
    "Revocation",
    "TrustedKey",
    "fingerprint",
    "load_keyring",
    "load_private_key",
    "load_public_key",
    "load_trusted_keys",
    "new_key_pair",
    "write_once",
]

PRIVATE_SUFFIX: Final = ".key"
PUBLIC_SUFFIX: Final = ".pub"
OWNER_SUFFIX: Final = ".owner.json"
REVOKED_SUFFIX: Final = ".revoked.json"
#: whom a key may sign for: its enrolled owner only, or (a service such as the web workspace,
#: which authenticates its users itself) the users it names in each signature
SIGNS_FOR: Final = ("owner", "users")
_RAW: Final = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, lowercase hex (what the audit trail records)."""
    return hashlib.sha256(key.public_bytes(*_RAW)).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a trusted key belongs to (``<name>.owner.json``)."""

    user_id: str
    full_name: str
    role: str | None = None
    signs_for: str = "owner"

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "full_name": self.full_name, "role": self.role,
                "signs_for": self.signs_for}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Revocation:
    """From when on a key's signatures do not count (epoch microseconds, UTC), and why."""

    from_us: int
    reason: str


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A trusted public key with its owner (None: trusted by a plain ``.pub`` file, no
    enrolled owner: good for signed context, not for signing batch records) and its
    revocation (None: not revoked)."""

    name: str
    public: Ed25519PublicKey
    owner: KeyOwner | None = None
    revoked: Revocation | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def valid_at(self, ts_us: int) -> bool:
        """Whether a signature made at ``ts_us`` counts (the key was not revoked then)."""
        return self.revoked is None or ts_us < self.revoked.from_us

    def with_revocation(self, revoked: Revocation | None) -> TrustedKey:
        """This key with the earlier of its revocation and ``revoked``."""
        if revoked is None or (self.revoked is not None and self.revoked.from_us <= revoked.from_us):
            return self
        return TrustedKey(self.name, self.public, self.owner, revoked)


def write_once(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a new file (``O_EXCL``: never replace one), synced; SignatureError if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise SignatureError(f"{path} exists already (key files are never replaced)") from None
    except OSError as exc:
        raise SignatureError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, mode)  # whatever the umask


def new_key_pair(name: str, directory: str | Path, *, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Make key ``name``: ``<directory>/<name>.key`` (mode 0600; encrypted when a
    ``passphrase`` is given) and ``<directory>/<name>.pub``.  The key is *not* trusted:
    an administrator trusts its ``.pub`` with ``uns keys trust``.  Refuses to overwrite
    either file.  Returns both paths."""
    check_key_name(name)
    if passphrase is not None and not passphrase:
        raise SignatureError("the passphrase is empty")
    private_path = Path(directory) / f"{name}{PRIVATE_SUFFIX}"
    public_path = Path(directory) / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} exists already: choose another key name (keys are never replaced)")
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SignatureError(f"cannot write key {name!r}: {exc}") from exc
    write_once(private_path, private_pem, 0o600)
    write_once(public_path, public_pem)
    return private_path, public_path


def load_private_key(file: str | Path, passphrase: bytes | None = None) -> tuple[str, Ed25519PrivateKey]:
    """(key name, private key) of a ``<name>.key`` file; SignatureError if it cannot be used
    (a plain key readable by others, an encrypted one without its passphrase, ...)."""
    path = Path(file)
    name = check_key_name(path.name.removesuffix(PRIVATE_SUFFIX))
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read private key {path}: {exc}") from exc
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    if not encrypted and os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignatureError(f"private key {path} is accessible by others: chmod 600 {path}")
    if encrypted and not passphrase:
        raise SignatureError(f"private key {path} is encrypted: give its passphrase (--passphrase-stdin)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise SignatureError(f"cannot decrypt private key {path}: wrong passphrase?") from None
        raise SignatureError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key")
    return name, key


def load_public_key(file: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key of a PEM file (``.pub``); SignatureError naming the file."""
    path = Path(file)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"trusted key {path} cannot be read: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"trusted key {path} is not an Ed25519 key")
    return key


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise SignatureError(f"{path} is not a JSON object")
    return data


def _owner(path: Path, public: Ed25519PublicKey) -> KeyOwner | None:
    data = _json_file(path)
    if data is None:
        return None
    if data.get("fingerprint") != fingerprint(public):
        raise SignatureError(f"{path} is about another key than its .pub (fingerprints differ)")
    try:
        role = None if data.get("role") is None else str(data["role"])
        owner = KeyOwner(str(data["user_id"]), str(data["full_name"]), role, str(data["signs_for"]))
    except KeyError as exc:
        raise SignatureError(f"{path} lacks {exc}") from None
    if owner.signs_for not in SIGNS_FOR:
        raise SignatureError(f"{path}: signs_for must be one of {', '.join(SIGNS_FOR)}")
    return owner


def _revocation(path: Path) -> Revocation | None:
    data = _json_file(path)
    if data is None:
        return None
    try:
        return Revocation(int(data["from_us"]), str(data.get("reason") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"{path} has no readable from_us: {exc}") from None


def load_keyring(directory: str | Path | None) -> dict[str, TrustedKey]:
    """Every trusted key of ``directory`` by name, with its owner and revocation ({} for None).
    SignatureError naming the file when one cannot be read."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise SignatureError(f"the trusted keys directory {root} does not exist (audit.trusted_keys)")
    keys: dict[str, TrustedKey] = {}
    for path in sorted(root.glob(f"*{PUBLIC_SUFFIX}")):
        name = check_key_name(path.name.removesuffix(PUBLIC_SUFFIX))
        public = load_public_key(path)
        owner = _owner(root / f"{name}{OWNER_SUFFIX}", public)
        keys[name] = TrustedKey(name, public, owner, _revocation(root / f"{name}{REVOKED_SUFFIX}"))
    return keys


def load_trusted_keys(
    directory: str | Path | None, *, at_us: int | None = None
) -> dict[str, Ed25519PublicKey]:
    """The public keys by name that are trusted at ``at_us`` (default: now): every key of
    :func:`load_keyring` that is not revoked by then.  For context events, checked as they
    arrive."""
    now = time.time_ns() // 1000 if at_us is None else at_us
    return {name: key.public for name, key in load_keyring(directory).items() if key.valid_at(now)}


def as_keyring(keys: Mapping[str, TrustedKey | Ed25519PublicKey]) -> dict[str, TrustedKey]:
    """Plain public keys (as :func:`load_trusted_keys` gives) as keys without an owner."""
    return {n: k if isinstance(k, TrustedKey) else TrustedKey(n, k) for n, k in keys.items()}
