"""What the audit trail's entries say: pure builders, no lake and no pyarrow.

An entry is ``(ts_us, kind, actor, reason, subject, detail_json)``; the chain
(:mod:`lake.hashing`) adds ``writer_id``, ``seq`` and the hashes.  The kinds
(docs/lake.md, ``audit``):

``engine_start``, ``engine_stop``, ``config_changed``, ``context_change``,
``record``, ``catalog_new``, ``schema_drift``, ``data_commit``, ``compaction``,
``vacuum``, ``report``, ``maintenance``, ``command`` (an NCMD/DCMD sent by ``uns cmd``), and from
:mod:`uns.audit`: ``signature``, ``key_trusted``, ``key_revoked``; from the review workspace
(:mod:`uns.users.state`, :mod:`uns.batch.dispositions`): the user and log-in kinds and
``disposition``.

This module is loaded by the engine's own process too (engine start and stop
events travel through the WAL): standard library only.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from uns.lake.hashing import detail_json, file_sha256
from uns.lake.tables import AuditEvent

__all__ = [
    "KINDS",
    "SYSTEM",
    "Entry",
    "catalog_entries",
    "config_changes",
    "data_commit_entry",
    "engine_event",
    "entry",
    "named_files",
    "os_user",
    "record_entries",
]

#: the actor of what the engine and its commit worker record themselves
SYSTEM: Final = "system"
KINDS: Final = (
    "engine_start",
    "engine_stop",
    "config_changed",
    "context_change",
    "record",
    "catalog_new",
    "schema_drift",
    "data_commit",
    "wal_quarantine",
    "repair",
    "compaction",
    "vacuum",
    "report",
    "maintenance",
    "signature",
    "key_trusted",
    "key_revoked",
    "command",
)

Entry = tuple[int, str, str, str, str, str]
#: metrics listed by name in one catalog entry's ``added``/``removed``/``changed``; beyond
#: that the entry gives the count and the SHA-256 of the birth's definitions (the lake's
#: metric_catalog table holds every one), so an entry stays small whatever a birth holds
MAX_LISTED: Final = 1000
#: a device's metric definitions at a birth: metric -> (datatype, unit)
Definitions = dict[str, tuple[str | None, str | None]]
Device = tuple[str | None, str | None, str | None]


def entry(
    ts_us: int, kind: str, subject: str, detail: Mapping[str, Any], *, actor: str = SYSTEM, reason: str = ""
) -> Entry:
    return (ts_us, kind, actor, reason, subject, detail_json(detail))


def os_user() -> str:
    """The operating-system user running this process (who ran a command by hand)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric uid)
        return f"uid:{os.getuid()}"


# ---------------------------------------------------------------- engine start / stop
def software_version() -> str:
    """The installed ``uns`` distribution's version."""
    try:
        return importlib.metadata.version("uns")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def engine_event(
    kind: str,
    *,
    version: str | None = None,
    config: Mapping[str, Any] | None = None,
    files: Mapping[str, str | None] | None = None,
    reason: str = "",
    time_sync: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """An ``engine_start``/``engine_stop`` event: the software version and, at start, the
    SHA-256 of the effective configuration (secrets masked: ``config`` must come masked)
    and of each file it names (``files``: role -> path; a missing file hashes as NULL)."""
    detail: dict[str, Any] = {"version": version or software_version(), "pid": os.getpid()}
    if config is not None:
        detail["config"] = config
        detail["config_sha256"] = hashlib.sha256(detail_json(config).encode()).hexdigest()
    hashed: dict[str, dict[str, str | None]] = {}
    for role, name in sorted((files or {}).items()):
        if not name:
            continue
        try:
            digest: str | None = file_sha256(Path(name))
        except OSError:
            digest = None
        hashed[role] = {"path": str(name), "sha256": digest}
    if hashed:
        detail["files"] = hashed
    if time_sync is not None:  # the host clock's synchronisation state (uns.lake.timesync)
        detail["time_sync"] = dict(time_sync)
    return AuditEvent(kind, "engine", detail_json(detail), SYSTEM, reason, int(time.time() * 1000))


def named_files(config: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The files a configuration (``Config.to_dict()``) names, by ``section.key``: the plant
    model, spec files, certificates (``*_file``; not the private key's)."""
    return {
        f"{section}.{key}": str(value)
        for section, keys in config.items()
        for key, value in keys.items()
        if value and (key in ("model", "spec") or key.endswith("_file")) and key != "key_file"
    }


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def config_changes(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two ``engine_start`` details: ``{"version": [old, new],
    "config": {key: [old, new]}, "files": {role: [old sha256, new sha256]}}`` (empty: nothing)."""
    out: dict[str, Any] = {}
    if previous.get("version") != current.get("version"):
        out["version"] = [previous.get("version"), current.get("version")]
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flat("", previous.get("config") or {}, old)
    _flat("", current.get("config") or {}, new)
    changed = {
        k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)
    }
    if changed:
        out["config"] = changed
    old_files = {r: f.get("sha256") for r, f in (previous.get("files") or {}).items()}
    new_files = {r: f.get("sha256") for r, f in (current.get("files") or {}).items()}
    files = {
        r: [old_files.get(r), new_files.get(r)]
        for r in sorted(old_files.keys() | new_files.keys())
        if old_files.get(r) != new_files.get(r)
    }
    if files:
        out["files"] = files
    return out


# ---------------------------------------------------------------- data commits
def data_commit_entry(
    ts_us: int, table: str, segment: int, version: int, files: Sequence[Mapping[str, Any]]
) -> Entry:
    """One table's commit of one WAL segment: the files added with their SHA-256 and rows."""
    rows = sum(int(f["rows"]) for f in files)
    detail = {"table": table, "segment": segment, "version": version, "rows": rows, "files": list(files)}
    return entry(ts_us, "data_commit", table, detail)


# ---------------------------------------------------------------- batch records
#: the columns of a record row that are not its kind's own (the detail names them itself)
_RECORD_COMMON: Final = frozenset(
    {"ts", "received_at", "path", "record_id", "user", "source", "signer", "content_sha256", "date"}
)
#: a record table's kind (uns.core.records)
_RECORD_KIND: Final = {"materials": "material", "results": "result", "comments": "comment"}


def record_entries(table: str, rows: Iterable[Mapping[str, Any]], ts_us: int) -> list[Entry]:
    """One ``record`` entry per row of a batch record table (materials, results, comments):
    who recorded what, where and for when, with the record's id, signer and content SHA-256."""
    out: list[Entry] = []
    for row in rows:
        detail = {
            "kind": _RECORD_KIND[table],
            "table": table,
            "record_id": row["record_id"],
            "path": row["path"],
            "valid_from": row["ts"],
            "received_at": row["received_at"],
            "user": row["user"],
            "source": row["source"],
            "signer": row["signer"],
            "content_sha256": row["content_sha256"],
            "fields": {k: v for k, v in row.items() if k not in _RECORD_COMMON},
        }
        actor = str(row["user"] or row["source"] or SYSTEM)
        out.append(entry(ts_us, "record", str(row["path"]), detail, actor=actor))
    return out


# ---------------------------------------------------------------- metric catalog
def births(rows: Iterable[Mapping[str, Any]]) -> list[tuple[Device, Any, Any, str | None, Definitions]]:
    """Catalog rows grouped into births, in order: (device, birth_ts, bdseq, path, definitions)."""
    out: dict[tuple[Device, Any, Any], tuple[str | None, Definitions]] = {}
    for row in rows:
        device: Device = (row["group_id"], row["edge_node_id"], row["device_id"])
        key = (device, row["birth_ts"], row["bdseq"])
        defs = out.setdefault(key, (row["path"], {}))[1]
        defs[str(row["metric"])] = (row["datatype"], row["unit"])
    return [(k[0], k[1], k[2], path, defs) for k, (path, defs) in out.items()]


def catalog_entries(
    grouped: Iterable[tuple[Device, Any, Any, str | None, Definitions]],
    previous: dict[Device, Definitions],
    ts_us: int,
) -> list[Entry]:
    """Per birth: ``catalog_new`` (a device's first) or ``schema_drift`` (metrics added,
    removed, or their datatype or unit changed since its previous birth); nothing for a
    birth that defines the same metrics.  ``previous`` is updated."""
    out: list[Entry] = []
    for device, birth_ts, bdseq, path, defs in grouped:
        before = previous.get(device)
        previous[device] = defs
        if before == defs:
            continue
        old = before or {}
        added = [
            {"metric": m, "datatype": d, "unit": u} for m, (d, u) in sorted(defs.items()) if m not in old
        ]
        removed = [
            {"metric": m, "datatype": d, "unit": u} for m, (d, u) in sorted(old.items()) if m not in defs
        ]
        changed = [
            {"metric": m, "datatype": [old[m][0], d], "unit": [old[m][1], u]}
            for m, (d, u) in sorted(defs.items())
            if m in old and old[m] != (d, u)
        ]
        group, node, dev = device
        detail: dict[str, Any] = {
            "group_id": group,
            "edge_node_id": node,
            "device_id": dev,
            "path": path,
            "birth_ts": birth_ts,
            "bdseq": bdseq,
            "added": added[:MAX_LISTED],
            "removed": removed[:MAX_LISTED],
            "changed": changed[:MAX_LISTED],
        }
        if max(len(added), len(removed), len(changed)) > MAX_LISTED:
            listing = sorted(defs.items())
            detail["counts"] = {"added": len(added), "removed": len(removed), "changed": len(changed)}
            detail["metrics"] = len(listing)
            detail["definitions_sha256"] = hashlib.sha256(
                detail_json({"definitions": listing}).encode()
            ).hexdigest()
        subject = path or "/".join(p for p in device if p)
        out.append(entry(ts_us, "catalog_new" if before is None else "schema_drift", subject, detail))
    return out
