"""What the audit trail's entries compare against, read once per commit worker: the
recent changes of each context key, the latest BIRTH's metric definitions per device.

Read from the tables (vectorized: a lake keeps every BIRTH ever received) only when
the worker starts; from then on the worker keeps them up to date from the segments
it commits.  Both reads leave out the segment being committed, so a replay after a
crash (its rows already in a table) compares against what came before it.
"""

from __future__ import annotations

import re
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

__all__ = ["birth_rows", "catalog_rows", "completed_births", "context_history", "latest_births"]

_NAMES: Final = {int(d): d.name for d in DataType}
_NO_DEVICE: Final = "\x00"  # a node's own metrics (device_id NULL), as a join key
#: the count of metrics a ``birth`` session event's detail ends with (uns.sparkplug.lifecycle)
_BORN: Final = re.compile(r"metrics=(\d+)")
#: a birth in the WAL and the tables: (group, edge node, device, birth_ts in ms)
BirthKey = tuple[Any, Any, Any, int]


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


def completed_births(
    rows: list[dict[str, Any]],
    sessions: Sequence[Sequence[Sequence[Any]]],
    earlier: Callable[[BirthKey], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The catalog rows of the births a segment completes: those whose ``birth`` session
    event is in the segment.  A large birth reaches the WAL a slice at a time and can span
    segments, its event in the last one: its rows in earlier segments (``earlier``, read
    from the table) join the segment's own; the rows of a birth still going on are left
    for the segment that completes it.  So each birth is compared as a whole, once."""
    born: dict[BirthKey, int | None] = {}
    names = WAL_COLUMNS["sessions"]
    for part in sessions:
        for values in zip(*part, strict=True):
            event = dict(zip(names, values, strict=True))
            if event["event"] == "birth":
                found = _BORN.search(event["detail"] or "")
                key = (event["group_id"], event["edge_node_id"], event["device_id"], event["ts"])
                born[key] = int(found.group(1)) if found else None
    by_birth: dict[BirthKey, list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["group_id"], row["edge_node_id"], row["device_id"], row["birth_ts"])
        by_birth.setdefault(key, []).append(row)
    out: list[dict[str, Any]] = []
    for key, own in by_birth.items():
        if key not in born:
            continue  # completed by a later segment
        count = born[key]
        if count is not None and len(own) < count:
            mine = {r["metric"] for r in own}
            out.extend(r for r in earlier(key) if r["metric"] not in mine)
        out.extend(own)
    return out


def birth_rows(
    table: DeltaTable,
    key: BirthKey,
    filesystem: pafs.FileSystem | None = None,
    paths: Callable[[str], str] = str,
) -> list[dict[str, Any]]:
    """The catalog rows of one birth already in the table (as :func:`catalog_rows` gives them;
    an object store's files read through ``filesystem``, named by ``paths(uri)``)."""
    files = [paths(u) for u in table.file_uris()]
    if not files:
        return []
    group, node, device, birth_ts = key
    when = pa.scalar(birth_ts * 1000, pa.timestamp("us", tz="UTC"))
    where = (
        (ds.field("group_id") == group) & (ds.field("edge_node_id") == node) & (ds.field("birth_ts") == when)
    )
    where &= ds.field("device_id").is_null() if device is None else ds.field("device_id") == device
    data = ds.dataset(files, format="parquet", filesystem=filesystem).to_table(filter=where)
    rows: list[dict[str, Any]] = data.to_pylist()
    for row in rows:
        row["birth_ts"] = birth_ts
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
