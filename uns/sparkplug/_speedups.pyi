"""Types of the native DATA decoder (uns/sparkplug/_speedups.c; see uns.sparkplug.native)."""

from typing import Any

ROW_BYTES: int

def decode_data(
    raw: bytes, by_alias: dict[int, Any], by_name: dict[str, Any], received_at: int, max_metrics: int, /
) -> tuple[int, bytes, tuple[Any, ...], int | None] | None: ...
def columns(rows: bytes, /) -> tuple[bytes, bytes, bytes, bytes, bytes]: ...
