"""Ed25519 key files: make a key pair, read a private key, read the trusted public keys.

- A **private key** is a PEM file (PKCS#8, unencrypted) readable by its owner only
  (mode 0600; one readable by group or others is refused, as ssh does).  Its name is
  the file's name without ``.key``: ``qa-line1.key`` signs as key ``qa-line1``.
- The **trusted keys** are the files ``<name>.pub`` (PEM SubjectPublicKeyInfo) in
  the directory named by the config key ``audit.trusted_keys``.  Adding a file there
  trusts the key; removing it revokes the key (for events that arrive afterwards,
  and for ``uns audit verify`` of every signature in the lake).

The signatures themselves are :mod:`uns.core.signing`'s.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from uns.core.signing import check_key_name
from uns.errors import SignatureError

__all__ = [
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "load_private_key",
    "load_trusted_keys",
    "new_key_pair",
]

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


def new_key_pair(name: str, private_dir: str | Path, trusted_dir: str | Path) -> tuple[Path, Path]:
    """Make key ``name``: ``<private_dir>/<name>.key`` (0600) and ``<trusted_dir>/<name>.pub``.
    Refuses to overwrite either file.  Returns both paths."""
    check_key_name(name)
    private_path = Path(private_dir) / f"{name}{PRIVATE_SUFFIX}"
    public_path = Path(trusted_dir) / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} exists already: choose another key name (keys are never replaced)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private_pem)
        os.chmod(private_path, 0o600)  # whatever the umask
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise SignatureError(f"cannot write key {name!r}: {exc}") from exc
    return private_path, public_path


def load_private_key(file: str | Path) -> tuple[str, Ed25519PrivateKey]:
    """(key name, private key) of a ``<name>.key`` file; SignatureError if it cannot be used."""
    path = Path(file)
    name = check_key_name(path.name.removesuffix(PRIVATE_SUFFIX))
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read private key {path}: {exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignatureError(f"private key {path} is accessible by others: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key")
    return name, key


def load_trusted_keys(directory: str | Path | None) -> dict[str, Ed25519PublicKey]:
    """The trusted public keys by name (every ``<name>.pub`` of ``directory``); {} for None.
    SignatureError naming the file when one cannot be read as an Ed25519 public key."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise SignatureError(f"the trusted keys directory {root} does not exist (audit.trusted_keys)")
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(root.glob(f"*{PUBLIC_SUFFIX}")):
        name = check_key_name(path.name.removesuffix(PUBLIC_SUFFIX))
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SignatureError(f"trusted key {path} cannot be read: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"trusted key {path} is not an Ed25519 key")
        keys[name] = key
    return keys
