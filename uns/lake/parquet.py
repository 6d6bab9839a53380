"""How the lake's Parquet files are written: one set of writer properties for every writer
(the engine's commits, its compactions, ``uns lake compact``, ``uns lake repair``)."""

from __future__ import annotations

from typing import Final

from deltalake import ColumnProperties, WriterProperties

__all__ = ["MEASUREMENT_STATISTICS", "STATISTICS_TRUNCATE_LENGTH", "writer_properties"]

#: bytes of a column's smallest and largest value a Parquet footer keeps: a footer that
#: held whole values (a long string, an old rejected payload) could grow past what readers
#: accept ("Couldn't deserialize thrift"); statistics cut this short still prune correctly
STATISTICS_TRUNCATE_LENGTH: Final = 1024


#: the measurements columns whose Parquet statistics (min/max per row group and page, and
#: so Delta's file statistics) are written: the ones queries filter on.  Statistics of the
#: others (values, flags, units, context JSON) took a third of a commit's Parquet writing
#: (0.80 -> 0.49 us per row measured) and skip nothing in practice.
MEASUREMENT_STATISTICS: Final = (
    "ts", "received_at", "path", "metric", "group_id", "edge_node_id", "device_id", "batch_id", "wal_segment",
)  # fmt: skip


def writer_properties(table: str | None = None) -> WriterProperties:
    """How ``table``'s Parquet files are written (every table's default when None)."""
    # zstd: a third smaller than snappy on measurement data at similar speed.
    if table != "measurements":
        return WriterProperties(
            compression="ZSTD", compression_level=3, statistics_truncate_length=STATISTICS_TRUNCATE_LENGTH
        )
    return WriterProperties(
        compression="ZSTD",
        compression_level=3,
        statistics_truncate_length=STATISTICS_TRUNCATE_LENGTH,
        default_column_properties=ColumnProperties(statistics_enabled="NONE"),
        column_properties={
            name: ColumnProperties(statistics_enabled="PAGE") for name in MEASUREMENT_STATISTICS
        },
    )
