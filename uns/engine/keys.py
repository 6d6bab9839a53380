"""The engine's keys: the trusted public keys context signatures are checked against, and
its own private key that signs its context acknowledgements (``engine.signing_key``)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from uns.config import Config
from uns.errors import EngineError, SignatureError
from uns.keyring import load_private_key, load_trusted_keys

__all__ = ["signing_key", "trusted_keys"]


def trusted_keys(config: Config) -> dict[str, Ed25519PublicKey]:
    """The public keys of ``audit.trusted_keys`` (read once, at start: restart the engine
    after adding or removing a key); EngineError when they cannot be read."""
    try:
        return load_trusted_keys(config.audit.trusted_keys)
    except SignatureError as exc:
        raise EngineError(f"cannot start: {exc}") from exc


def signing_key(config: Config) -> tuple[str, Ed25519PrivateKey] | None:
    """The engine's own key (``engine.signing_key``), which signs its context
    acknowledgements; None without one.  EngineError when it cannot be read."""
    if config.engine.signing_key is None:
        return None
    try:
        return load_private_key(config.engine.signing_key)
    except SignatureError as exc:
        raise EngineError(f"cannot start: engine.signing_key: {exc}") from exc
