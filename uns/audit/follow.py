"""Follow the audit trail: the entries of some kinds, read once, then only what is new.

The review workspace keeps its users, log-ins, lockouts, dispositions and signatures
as entries of the lake's audit trail (docs/web.md), so that several ``uns serve``
processes over one lake share them and every change is in the trail.  A
:class:`AuditFollower` reads the entries of the kinds it is given from every file of
the ``audit`` table once, and on :meth:`AuditFollower.refresh` only the files the table
gained since (new commits, or the compacted files that replaced others: their rows are
known already and are dropped by their ``(writer_id, seq)``).  No DuckDB: a refresh
with nothing new costs one look at the Delta log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from uns.errors import LakeError
from uns.lake.audit import AUDIT
from uns.lake.hashing import ChainRow, ts_micros

__all__ = ["AuditFollower", "order"]

_COLUMNS: Final = list(ChainRow.__slots__)


def order(row: ChainRow) -> tuple[int, str, int]:
    """The order of the trail: time, then writer and seq (ties between writers)."""
    return (row.ts, row.writer_id, row.seq)


class AuditFollower:
    """The entries of ``kinds`` in the audit trail of the lake at ``root`` (thread-safe)."""

    def __init__(self, root: str | Path, kinds: Iterable[str]) -> None:
        self.root = Path(root)
        self.kinds = sorted(set(kinds))
        self._table: DeltaTable | None = None
        self._files: set[str] = set()
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.version: int | None = None

    def _open(self) -> DeltaTable | None:
        if self._table is None:
            try:
                self._table = DeltaTable(self.root / AUDIT)
            except TableNotFoundError:
                return None
            except Exception as exc:
                raise LakeError(f"cannot read the audit trail: {exc}", table=AUDIT) from exc
        else:
            try:
                self._table.update_incremental()
            except Exception as exc:
                raise LakeError(f"cannot read the audit trail: {exc}", table=AUDIT) from exc
        return self._table

    def refresh(self) -> list[ChainRow]:
        """The entries of the followed kinds not handed out before, in the trail's order."""
        with self._lock:
            table = self._open()
            if table is None:
                return []
            version = table.version()
            if version == self.version:
                return []
            uris = table.file_uris()
            new = [u for u in uris if u not in self._files]
            rows = self._read(new) if new else []
            self._files = set(uris)
            self.version = version
            fresh = [r for r in rows if (r.writer_id, r.seq) not in self._seen]
            self._seen.update((r.writer_id, r.seq) for r in fresh)
        fresh.sort(key=order)
        return fresh

    def _read(self, uris: list[str]) -> list[ChainRow]:
        try:
            data = ds.dataset(uris, format="parquet").to_table(
                columns=_COLUMNS, filter=pc.field("kind").isin(pa.array(self.kinds, pa.string()))
            )
        except (OSError, pa.ArrowException) as exc:
            raise LakeError(f"cannot read the audit trail: {exc}", table=AUDIT) from exc
        cols = {name: data.column(name).to_pylist() for name in _COLUMNS}
        cols["ts"] = [ts_micros(v) for v in cols["ts"]]
        return [
            ChainRow(str(w), int(s), int(t), str(k), a or "", r or "", sub or "", d or "{}", p or "", h or "")
            for w, s, t, k, a, r, sub, d, p, h in zip(*(cols[n] for n in _COLUMNS), strict=True)
        ]
