"""How the lake's Parquet files are written: one set of writer properties for every writer
(the engine's commits, its compactions, ``uns lake compact``, ``uns lake repair``)."""

from __future__ import annotations

from typing import Final

from deltalake import WriterProperties

__all__ = ["STATISTICS_TRUNCATE_LENGTH", "writer_properties"]

#: bytes of a column's smallest and largest value a Parquet footer keeps: a footer that
#: held whole values (a long string, an old rejected payload) could grow past what readers
#: accept ("Couldn't deserialize thrift"); statistics cut this short still prune correctly
STATISTICS_TRUNCATE_LENGTH: Final = 1024


def writer_properties() -> WriterProperties:
    # zstd: a third smaller than snappy on measurement data at similar speed.
    return WriterProperties(
        compression="ZSTD", compression_level=3, statistics_truncate_length=STATISTICS_TRUNCATE_LENGTH
    )
