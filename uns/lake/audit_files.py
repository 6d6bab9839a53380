"""What the audit trail reads of the lake's files, on a directory or an object store alike
(:class:`uns.lake.storage.TableFiles`): a chain's tail, the SHA-256 of the data files a
commit added, the row checksums of a compaction, the compactions already recorded.

On a local lake the files are read from disk (and DuckDB reads the Parquet files of a
compaction itself); on an object store through the store's pyarrow filesystem -- the
commit worker then reads each file it wrote back once to hash it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable

from uns.errors import LakeError
from uns.lake.deltalog import CommitActions
from uns.lake.hashing import stream_sha256
from uns.lake.schemas import SCHEMAS
from uns.lake.storage import TableFiles
from uns.lake.tables import PARTITION_COLUMN

__all__ = [
    "audited_compactions",
    "file_columns",
    "hashed_adds",
    "row_checksum",
    "table_checksum",
    "writer_rows",
]

AUDIT: Final = "audit"
_U64: Final = 1 << 64


def writer_rows(
    files: TableFiles, dt_: DeltaTable, writer_id: str, columns: list[str], *, kind: str | None = None
) -> pa.Table:
    """The rows of one writer's chain in the newest two ``date`` partitions that hold any
    (its tail; entries carry the time they were recorded, so the tail is there), or of
    every partition when ``kind`` is given (the writer's previous entry of that kind)."""
    adds = pa.table(dt_.get_add_actions(flatten=True))
    if adds.num_rows == 0:
        return SCHEMAS[AUDIT].empty_table().select(columns)
    by_date: dict[str, list[str]] = {}
    for path, day in zip(
        adds.column("path").to_pylist(), adds.column(f"partition.{PARTITION_COLUMN}").to_pylist(), strict=True
    ):
        by_date.setdefault(str(day), []).append(files.arrow_path(path))
    wanted = pc.field("writer_id") == writer_id
    if kind is not None:
        wanted = wanted & (pc.field("kind") == kind)
    found: list[pa.Table] = []
    fs = files.filesystem()
    for day in sorted(by_date, reverse=True):
        dataset = ds.dataset(by_date[day], format="parquet", filesystem=fs)
        part = dataset.to_table(columns=columns, filter=wanted)
        if part.num_rows:
            found.append(part)
            if len(found) == 2 or kind is not None:
                break
    return pa.concat_tables(found) if found else SCHEMAS[AUDIT].empty_table().select(columns)


def hashed_adds(files: TableFiles, actions: CommitActions) -> list[dict[str, Any]]:
    """The files a commit added, each with its SHA-256, bytes and rows."""
    out = []
    for add in actions.adds:
        try:
            with files.open(add.path) as f:
                digest = stream_sha256(f)
        except OSError as exc:
            raise LakeError(f"audit: cannot hash {files.table}/{add.path}: {exc}", table=files.table) from exc
        out.append({"path": add.path, "sha256": digest, "bytes": add.size, "rows": add.rows})
    return out


def row_checksum(
    files: TableFiles, rels: Sequence[str], columns: Sequence[str]
) -> tuple[int | None, str | None]:
    """(rows, order-independent checksum) of the rows of the Parquet files ``rels``: the sum
    modulo 2^64 of DuckDB's 64-bit hash of each row's ``columns``, in hex (equal row
    multisets give equal checksums whatever the files and row order)."""
    if not rels:
        return 0, f"{0:016x}"
    import duckdb  # noqa: PLC0415 - only a compaction needs it

    con = duckdb.connect()
    names = ", ".join(f'"{c}"' for c in columns)
    try:
        if files.local_dir is not None:
            sql = f"SELECT count(*), coalesce(sum(hash({names})::HUGEINT), 0) FROM read_parquet(?, union_by_name = 1)"  # noqa: S608, E501
            rows, total = con.execute(sql, [[str(files.local_path(r)) for r in rels]]).fetchone() or (0, 0)
        else:  # DuckDB scans the Arrow dataset of the store's files
            paths = [files.arrow_path(r) for r in rels]
            fs = files.filesystem()
            # a text column may be dictionary-encoded in one file (the native lane's sample
            # blocks) and plain in another: read both as their values (the hashes agree)
            schema = pa.unify_schemas([_values(pq.read_schema(p, filesystem=fs)) for p in paths])
            source = ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)  # noqa: F841 - read by DuckDB
            sql = f"SELECT count(*), coalesce(sum(hash({names})::HUGEINT), 0) FROM source"  # noqa: S608
            rows, total = con.execute(sql).fetchone() or (0, 0)
    finally:
        con.close()
    return int(rows), f"{int(total) % _U64:016x}"


def _values(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each dictionary column as its value type."""
    dictionary = pa.types.is_dictionary
    return pa.schema([f.with_type(f.type.value_type) if dictionary(f.type) else f for f in schema])


def table_checksum(data: pa.Table, columns: Sequence[str]) -> tuple[int, str]:
    """:func:`row_checksum` of the rows of an Arrow table."""
    import duckdb  # noqa: PLC0415 - only a compaction or a repair needs it

    con = duckdb.connect()
    try:
        con.register("_rows", data)
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT count(*), coalesce(sum(hash({names})::HUGEINT), 0) FROM _rows"  # noqa: S608
        rows, total = con.execute(sql).fetchone() or (0, 0)
    finally:
        con.close()
    return int(rows), f"{int(total) % _U64:016x}"


def file_columns(files: TableFiles, rels: Sequence[str]) -> set[str]:
    """The column names of the Parquet files ``rels`` (those that can be read)."""
    names: set[str] = set()
    fs = files.filesystem()
    for rel in rels:
        with contextlib.suppress(OSError):  # a file gone: row_checksum says so
            names.update(pq.read_schema(files.arrow_path(rel), filesystem=fs).names)
    return names


def audited_compactions(files: TableFiles, table: DeltaTable) -> set[tuple[str, int]]:
    """(table, version) of every compaction the trail in ``table`` has recorded (any writer)."""
    uris = table.file_uris()
    if not uris:
        return set()
    paths = [files.store.arrow_path(u) for u in uris]
    rows = ds.dataset(paths, format="parquet", filesystem=files.filesystem()).to_table(
        columns=["detail"], filter=pc.field("kind") == "compaction"
    )
    out: set[tuple[str, int]] = set()
    for text in rows["detail"].to_pylist():
        detail = json.loads(text)
        out.add((str(detail["table"]), int(detail["version"])))
    return out
