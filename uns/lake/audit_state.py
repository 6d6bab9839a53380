"""What the audit trail's entries compare against, read once per commit worker: the
recent changes of each context key, the latest BIRTH's metric definitions per device.

Read from the tables (vectorized: a lake keeps every BIRTH ever received) only when
the worker starts; from then on the worker keeps them up to date from the segments
it commits.  Both reads leave out the segment being committed, so a replay after a
crash (its rows already in a table) compares against what came before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import DeltaTable

from uns.lake.audit_context import KEEP, ContextHistory
from uns.lake.audit_entries import Definitions, Device
from uns.lake.tables import WAL_COLUMNS
from uns.sparkplug.datatypes import DataType

__all__ = ["catalog_rows", "context_history", "latest_births"]

_NAMES: Final = {int(d): d.name for d in DataType}
_NO_DEVICE: Final = "\x00"  # a node's own metrics (device_id NULL), as a join key


def catalog_rows(parts: Sequence[Sequence[Sequence[Any]]]) -> list[dict[str, Any]]:
    """A segment's metric_catalog rows straight from its WAL columns (``birth_ts`` in ms,
    ``datatype`` by name, as the table stores it)."""
    names = WAL_COLUMNS["metric_catalog"]
    rows: list[dict[str, Any]] = []
    for part in parts:
        for values in zip(*part, strict=True):
            row = dict(zip(names, values, strict=False))
            row["datatype"] = _NAMES.get(row["datatype"], str(row["datatype"]))
            rows.append(row)
    return rows


def latest_births(
    table: DeltaTable,
    before_ms: int,
    filesystem: pafs.FileSystem | None = None,
    paths: Callable[[str], str] = str,
) -> dict[Device, Definitions]:
    """Per device, the definitions of its newest BIRTH older than ``before_ms`` (the table's
    files read through ``filesystem``, named by ``paths(uri)``, for an object store)."""
    files = [paths(u) for u in table.file_uris()]
    if not files:
        return {}
    cols = ["group_id", "edge_node_id", "device_id", "metric", "datatype", "unit", "birth_ts"]
    data = ds.dataset(files, format="parquet", filesystem=filesystem).to_table(columns=cols)
    ms = data["birth_ts"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    data = data.set_column(cols.index("birth_ts"), "birth_ts", ms)
    data = data.set_column(cols.index("device_id"), "device_id", pc.fill_null(data["device_id"], _NO_DEVICE))
    data = data.filter(pc.less(data["birth_ts"], before_ms))
    keys = ["group_id", "edge_node_id", "device_id"]
    newest = data.group_by(keys).aggregate([("birth_ts", "max")]).rename_columns([*keys, "birth_ts"])
    latest = data.join(newest, [*keys, "birth_ts"], join_type="inner")
    out: dict[Device, Definitions] = {}
    for row in latest.to_pylist():
        device = (
            row["group_id"],
            row["edge_node_id"],
            None if row["device_id"] == _NO_DEVICE else row["device_id"],
        )
        out.setdefault(device, {})[row["metric"]] = (row["datatype"], row["unit"])
    return out


def context_history(
    table: DeltaTable,
    before_order: int,
    filesystem: pafs.FileSystem | None = None,
    paths: Callable[[str], str] = str,
    *,
    keep: int = KEEP,
) -> ContextHistory:
    """The recent context changes per (path, key) among those that arrived before
    ``ingest_order`` ``before_order``; older ones are looked up in ``table`` when needed."""
    files = [paths(u) for u in table.file_uris()]
    columns = ["path", "key", "ts", "ingest_order", "value"]

    def lookup(path: str, key: str, ts: Any, order: int) -> str | None:
        wanted = (pc.field("path") == path) & (pc.field("key") == key) & (pc.field("ingest_order") < order)
        found = ds.dataset(files, format="parquet", filesystem=filesystem).to_table(
            columns=columns, filter=wanted & (pc.field("ts") <= pa.scalar(ts, pa.timestamp("ms", tz="UTC")))
        )
        if not found.num_rows:
            return None
        last = found.sort_by([("ts", "ascending"), ("ingest_order", "ascending")]).slice(found.num_rows - 1)
        value = last["value"][0].as_py()
        return None if value is None else str(value)

    if not files:
        return ContextHistory(lookup, keep)
    known = ds.dataset(files, format="parquet", filesystem=filesystem).to_table(
        columns=columns, filter=pc.field("ingest_order") < before_order
    )
    return ContextHistory.of(zip(*(known[c].to_pylist() for c in columns), strict=True), lookup, keep)
