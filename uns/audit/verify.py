"""``uns audit verify``: prove the lake intact, or name what is not.

1. Every writer's chain in the ``audit`` table: seq 1, 2, 3, ... without gap or
   duplicate, each ``prev_hash`` the previous row's ``hash``, each ``hash`` the
   SHA-256 of its row's canonical form (:mod:`lake.hashing`): an audit row deleted,
   edited or inserted shows.
2. Every data file of every data table's *current* version: the audit trail must
   have recorded it (a ``data_commit``, ``compaction`` or ``repair`` entry) and not recorded its
   removal, the file must exist, and its SHA-256 must be the one recorded: a value
   changed in a file rewritten under the same name, a deleted file, a file added
   behind the engine's back, and a table rolled back (files the trail removed are
   back) all show.
3. Every file the trail added and did not remove must be in the current version: a
   rollback, or a file removed from the log, shows.
4. Every compaction recorded the same rows before and after (count and checksum); every
   repair of the rejected table the same rows and the same checksum of the columns it
   must not change (all but the payload's, which it cut to their first KiB).

A file without an audit entry that a compaction (or a repair) added, killed between
its Delta commit and its audit entry, is named as such: the next ``uns lake compact``
or engine start records it (:meth:`uns.lake.audit.AuditRecorder.reconcile`).

Files are read once each, in a few threads (``hashlib`` releases the GIL), so the
check runs at about the disk's read speed.  While a writer runs, a file it committed
after the trail was read could look unaccounted for: such findings are checked once
more against a fresh read of the trail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from uns.errors import LakeError
from uns.lake.audit import AUDIT, DATA_TABLES
from uns.lake.deltalog import adding_commit
from uns.lake.hashing import ChainRow, chain_findings, stream_sha256, ts_micros
from uns.lake.storage import LakeStore, TableFiles, as_store

__all__ = ["DATA_TABLES", "VerifyReport", "read_chain", "verify"]

_THREADS: Final = 4


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify` found: ``findings`` empty means intact."""

    entries: int = 0
    writers: dict[str, tuple[int, str]] = field(default_factory=dict)  # writer -> its head (seq, hash)
    files: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mb_s = self.bytes / 2**20 / self.seconds if self.seconds else 0.0
        heads = ", ".join(f"{w or '(default)'}@{s}:{h[:12]}" for w, (s, h) in sorted(self.writers.items()))
        return (
            f"audit trail intact: {self.entries} entries ({heads or 'no writer'}), {self.files} data files, "
            f"{self.rows} rows, {self.bytes / 2**20:.1f} MiB verified in {self.seconds:.1f} s "
            f"({mb_s:.0f} MiB/s)"
        )


@dataclass(frozen=True, slots=True)
class _Recorded:
    sha256: str
    rows: int
    by: str  # "writer seq N", for the findings


def _table(store: LakeStore, name: str) -> DeltaTable | None:
    try:
        return DeltaTable(store.table_uri(name), storage_options=store.delta_options())
    except TableNotFoundError:
        return None
    except Exception as exc:
        raise LakeError(f"cannot open table {name}: {exc}", table=name) from exc


def read_chain(root: str | Path | LakeStore) -> list[ChainRow]:
    """Every row of the audit table (its current version), of a lake directory or URL."""
    store = as_store(root)
    table = _table(store, AUDIT)
    if table is None or not table.file_uris():
        return []
    files = store.files(AUDIT)
    try:
        paths = [store.arrow_path(u) for u in table.file_uris()]
        data = ds.dataset(paths, format="parquet", filesystem=files.filesystem()).to_table()
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(f"cannot read the audit table: {exc}", table=AUDIT) from exc
    cols = {name: data.column(name).to_pylist() for name in ChainRow.__slots__}
    cols["ts"] = [ts_micros(v) for v in cols["ts"]]
    return [ChainRow(*values) for values in zip(*(cols[n] for n in ChainRow.__slots__), strict=True)]


def _by(row: ChainRow) -> str:
    return f"audit {row.writer_id or '(default)'} seq {row.seq}"


def _registry(
    rows: Iterable[ChainRow], findings: list[str]
) -> tuple[dict[tuple[str, str], _Recorded], dict[tuple[str, str], str]]:
    """Files the trail added (table, path) -> what it recorded, and those it removed -> by whom."""
    added: dict[tuple[str, str], _Recorded] = {}
    removed: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.kind not in ("data_commit", "compaction", "repair"):
            continue
        try:
            detail: dict[str, Any] = json.loads(row.detail)
            table = str(detail["table"])
            files = detail["files"] if row.kind == "data_commit" else detail["added"]
            for f in files:
                added[(table, str(f["path"]))] = _Recorded(str(f["sha256"]), int(f["rows"]), _by(row))
            for path in detail.get("removed", ()):
                removed[(table, str(path))] = _by(row)
        except (ValueError, KeyError, TypeError):
            findings.append(f"{_by(row)}: unreadable {row.kind} detail")
            continue
        if row.kind in ("compaction", "repair") and (
            detail.get("rows_before") != detail.get("rows_after")
            or detail.get("checksum_before") != detail.get("checksum_after")
        ):
            findings.append(f"{_by(row)}: {row.kind} of {table} changed the rows (count or checksum differ)")
    return added, removed


def _current_files(store: LakeStore) -> dict[tuple[str, str], tuple[int, int]]:
    """(table, path) -> (bytes, rows) of every file in every data table's current version."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for name in DATA_TABLES:
        table = _table(store, name)
        if table is None:
            continue
        adds = pa.table(table.get_add_actions(flatten=True))
        if not adds.num_rows:
            continue
        for path, size, rows in zip(
            adds.column("path").to_pylist(),
            adds.column("size_bytes").to_pylist(),
            adds.column("num_records").to_pylist(),
            strict=True,
        ):
            out[(name, str(path))] = (int(size or 0), int(rows or 0))
    return out


def _digest(files: dict[str, TableFiles], key: tuple[str, str]) -> str | None:
    try:
        with files[key[0]].open(key[1]) as f:
            return stream_sha256(f)
    except FileNotFoundError:
        return None


def _unaccounted(store: LakeStore, key: tuple[str, str]) -> str:
    """Why a data file may lack an audit entry: the commit that added it says whether it
    was a compaction or a repair interrupted before its entry, or something else."""
    table, path = key
    commit = adding_commit(store.files(table), path)
    if commit is not None and commit.operation == "OPTIMIZE":
        return (
            f"data file of an interrupted compaction (table version {commit.version}: its audit "
            "entry was never written; the next `uns lake compact` or engine start records it)"
        )
    if commit is not None and commit.repair:
        return (
            f"data file of an interrupted `uns lake repair` (table version {commit.version}: its "
            "audit entry was never written)"
        )
    return "data file without an audit entry (added behind the writer's back?)"


def verify(root: str | Path | LakeStore) -> VerifyReport:
    """Check the lake at ``root``, a directory or an object-store URL (see the module docstring)."""
    store = as_store(root)
    if not store.exists():
        raise LakeError(f"no lake at {store}")
    started = time.perf_counter()
    report = VerifyReport()
    current = _current_files(store)  # before the trail: what a running writer adds later is in the trail
    chain = read_chain(store)
    report.entries = len(chain)
    report.findings.extend(chain_findings(chain))
    for row in chain:
        if row.seq > report.writers.get(row.writer_id, (0, ""))[0]:
            report.writers[row.writer_id] = (row.seq, row.hash)
    added, removed = _registry(chain, report.findings)
    if any(key not in added for key in current):  # a running writer committed between the reads?
        added.update(_registry(read_chain(store), [])[0])
    checked = [key for key in current if key in added and key not in removed]
    files = {name: store.files(name) for name in DATA_TABLES}
    with ThreadPoolExecutor(_THREADS) as pool:
        digests = dict(zip(checked, pool.map(lambda k: _digest(files, k), checked), strict=True))
    for key in sorted(current):
        table, path = key
        size, rows = current[key]
        name = f"{table}/{path}"
        if key not in added:
            report.findings.append(f"{name}: {_unaccounted(store, key)}")
        elif key in removed:
            report.findings.append(
                f"{name}: in the table although {removed[key]} removed it (table rolled back?)"
            )
        elif digests[key] is None:
            report.findings.append(f"{name}: data file missing (deleted; {added[key].by} added it)")
        elif digests[key] != added[key].sha256:
            report.findings.append(f"{name}: content changed (SHA-256 differs from {added[key].by})")
        else:
            report.files += 1
            report.rows += rows
            report.bytes += size
    for key, recorded in sorted(added.items()):
        if key not in removed and key not in current:
            report.findings.append(
                f"{key[0]}/{key[1]}: added by {recorded.by} but not in the table's current version "
                "(table rolled back, or the file removed from its log)"
            )
    report.seconds = time.perf_counter() - started
    return report
