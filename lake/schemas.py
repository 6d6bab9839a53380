"""The lake's tables as explicit Arrow schemas (see docs/lake.md for the columns)."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from lake.tables import CONTEXT_COLUMNS, PARTITION_COLUMN

__all__ = ["SCHEMAS"]

_TS = pa.timestamp("ms", tz="UTC")
_DATE = pa.field(PARTITION_COLUMN, pa.date32())

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "measurements": pa.schema(
        [
            ("ts", _TS),
            ("received_at", _TS),
            ("path", pa.string()),
            ("metric", pa.string()),
            ("datatype", pa.string()),
            ("value_double", pa.float64()),
            ("value_text", pa.string()),
            ("unit", pa.string()),
            ("quality", pa.string()),
            ("is_historical", pa.bool_()),
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("seq", pa.int64()),
            *((key, pa.string()) for key in CONTEXT_COLUMNS),
            ("context", pa.string()),  # JSON object of every context key known at ingest
            ("bdseq", pa.int64()),
            ("alias", pa.int64()),
            ("is_transient", pa.bool_()),
            ("is_null", pa.bool_()),
            ("unmapped", pa.bool_()),
            # where the row came from (traceability, docs/gxp.md): the writer and its WAL
            # segment; set by the commit, constant per file as written
            ("wal_writer", pa.string()),
            ("wal_segment", pa.int64()),
            _DATE,
        ]
    ),
    "context": pa.schema(
        [
            ("ts", _TS),
            ("received_at", _TS),
            ("path", pa.string()),
            ("key", pa.string()),
            ("value", pa.string()),
            ("source", pa.string()),
            ("user", pa.string()),
            ("reason", pa.string()),
            # Arrival order of the change (segment << 32 | row): breaks ties between equal timestamps.
            ("ingest_order", pa.int64()),
            # The context event the change came from (every change of one event carries it;
            # NULL in lakes written before it existed).
            ("event_id", pa.string()),
            # The trusted key that signed the event (NULL: unsigned, or a lake from before).
            ("signer", pa.string()),
            _DATE,
        ]
    ),
    "metric_catalog": pa.schema(
        [
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("path", pa.string()),
            ("metric", pa.string()),
            ("alias", pa.int64()),
            ("datatype", pa.string()),
            ("unit", pa.string()),
            ("properties", pa.string()),
            ("birth_ts", _TS),
            ("bdseq", pa.int64()),
            _DATE,
        ]
    ),
    "sessions": pa.schema(
        [
            ("ts", _TS),
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("event", pa.string()),
            ("detail", pa.string()),
            _DATE,
        ]
    ),
    "rejected": pa.schema(
        [
            ("received_at", _TS),
            ("topic", pa.string()),
            ("payload", pa.binary()),
            ("error", pa.string()),
            _DATE,
        ]
    ),
    # the audit trail (lake.audit; docs/lake.md and docs/gxp.md)
    "audit": pa.schema(
        [
            ("writer_id", pa.string()),
            ("seq", pa.int64()),  # gapless per writer_id, from 1
            ("ts", pa.timestamp("us", tz="UTC")),  # when the entry was recorded
            ("kind", pa.string()),
            ("actor", pa.string()),
            ("reason", pa.string()),
            ("subject", pa.string()),
            ("detail", pa.string()),  # JSON object
            ("prev_hash", pa.string()),
            ("hash", pa.string()),  # SHA-256 of the canonical form (lake.hashing)
            _DATE,
        ]
    ),
}
