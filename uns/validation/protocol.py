"""The validation protocol: what will be tested, and how, written before it is executed.

``uns validate --protocol-only --out DIR`` writes it for this version of uns and this
configuration: each requirement of the parts chosen with its id, text, regulation,
test steps (action and expected result) and acceptance criterion, as
``protocol.json``, ``protocol.html`` and ``protocol.pdf``.  The plant approves it --
signed with ``uns audit sign protocol.json`` (an audited signature, like a batch
report's) or on paper -- and ``uns validate --protocol protocol.json`` executes
exactly that protocol.

The JSON carries ``protocol_sha256``: the SHA-256 of its canonical JSON (sorted keys,
no spaces, UTF-8) without that field.  A protocol is refused when it is not a uns
validation protocol, when its hash does not match its content, when it was written
for another version of uns, for another configuration, or when a requirement in it
is not this version's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import uns
from uns.errors import UnsError
from uns.validation.checks import PARTS, REQUIREMENTS

if TYPE_CHECKING:
    from uns.config import Config

__all__ = [
    "DOCUMENT",
    "FORMAT",
    "MAX_BYTES",
    "build_protocol",
    "config_sha256",
    "content_sha256",
    "load_protocol",
    "protocol_requirements",
    "read_json",
]

#: the ``document`` field of every protocol
DOCUMENT: Final = "uns validation protocol"
FORMAT: Final = 1
#: a protocol file larger than this is not one of ours (untrusted bytes are bounded)
MAX_BYTES: Final = 2 << 20


def config_sha256(config: Config) -> str:
    """SHA-256 of the effective configuration, secrets masked, as canonical JSON (what
    the audit trail's ``engine_start`` entry records as ``config_sha256``)."""
    from uns.lake.hashing import detail_json  # noqa: PLC0415

    return hashlib.sha256(detail_json(config.to_dict(masked=True)).encode()).hexdigest()


def content_sha256(doc: Mapping[str, Any], field: str = "protocol_sha256") -> str:
    """SHA-256 of ``doc``'s canonical JSON without ``field`` (the hash it carries of itself)."""
    body = {k: v for k, v in doc.items() if k != field}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def build_protocol(
    parts: Sequence[str],
    *,
    created: str,
    author: str,
    host: str,
    configuration: Mapping[str, Any],
    oq: Mapping[str, Any] | None = None,
    pq: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The protocol of ``parts`` (iq, oq, pq) for this version, sealed with its SHA-256.

    ``configuration``: ``{"file", "sha256"}`` of the configuration it is written for;
    ``oq``: the OQ's broker and scenario; ``pq``: the plant's lake and batches."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UnsError(f"parts must be among {', '.join(PARTS)}, not {', '.join(parts) or 'none'}")
    names = "/".join(p.upper() for p in PARTS if p in parts)
    doc: dict[str, Any] = {
        "document": DOCUMENT,
        "format": FORMAT,
        "title": f"uns {uns.__version__} {names} protocol",
        "uns_version": uns.__version__,
        "parts": [p for p in PARTS if p in parts],
        "created": created,
        "created_by": author,
        "host": host,
        "configuration": dict(configuration),
        "oq": dict(oq) if oq is not None and "oq" in parts else None,
        "pq": dict(pq) if pq is not None and "pq" in parts else None,
        "requirements": [r.to_dict() for r in REQUIREMENTS.values() if r.part in parts],
        "approval": (
            "Approve before execution: sign protocol.json with `uns audit sign protocol.json "
            "--meaning approved` (an audited signature in the lake), or sign the printed protocol."
        ),
    }
    doc["protocol_sha256"] = content_sha256(doc)
    return doc


def read_json(file: Path, what: str, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON document of ``file`` (at most ``max_bytes``: untrusted bytes are bounded);
    UnsError naming ``what`` it should have been when it cannot be read or is not JSON."""
    from uns.lake.query import read_bounded  # noqa: PLC0415

    data = read_bounded(file, max_bytes, what)
    try:
        return json.loads(data)
    except ValueError:
        raise UnsError(f"{file} is not {what} (not JSON)") from None


def load_protocol(path: str | Path, *, config_sha256: str | None) -> dict[str, Any]:
    """The protocol of ``path`` if this installation may execute it, else UnsError saying
    in one line why not (see the module doc)."""
    file = Path(path)
    doc = read_json(file, "a uns validation protocol")
    if not isinstance(doc, dict) or doc.get("document") != DOCUMENT or doc.get("format") != FORMAT:
        raise UnsError(f"{file} is not a uns validation protocol (format {FORMAT})")
    claimed = doc.get("protocol_sha256")
    actual = content_sha256(doc)
    if claimed != actual:
        raise UnsError(
            f"{file}: the protocol's SHA-256 does not match its content (it says {claimed}, "
            f"the content hashes to {actual}): it was changed after it was written"
        )
    if doc.get("uns_version") != uns.__version__:
        raise UnsError(
            f"{file} is a protocol of uns {doc.get('uns_version')}, this is uns {uns.__version__}: "
            "write the protocol of this version (uns validate --protocol-only)"
        )
    written_for = (doc.get("configuration") or {}).get("sha256")
    if config_sha256 is not None and written_for != config_sha256:
        raise UnsError(
            f"{file} was written for the configuration with SHA-256 {written_for}; this configuration's "
            f"is {config_sha256} (pass the same --config, with the same UNS_* variables)"
        )
    protocol_requirements(doc, file)
    return doc


def protocol_requirements(doc: Mapping[str, Any], file: str | Path = "the protocol") -> list[str]:
    """The requirement ids of a protocol, each checked to be this version's, word for word."""
    ids = []
    for entry in doc.get("requirements") or []:
        req = REQUIREMENTS.get(str(entry.get("id")))
        if req is None or req.to_dict() != entry:
            raise UnsError(f"{file}: requirement {entry.get('id')} is not this version's requirement")
        if req.part not in doc.get("parts", []):
            raise UnsError(f"{file}: requirement {req.id} is not of the protocol's parts")
        ids.append(req.id)
    if not ids:
        raise UnsError(f"{file} names no requirement")
    return ids
