"""Types of the native DATA decoder (uns/sparkplug/_speedups.c; see uns.sparkplug.native)."""

from typing import Any

ROW_BYTES: int

def decode_data(
    raw: bytes, by_alias: dict[int, Any], by_name: dict[str, Any], received_at: int, max_metrics: int, /
) -> tuple[int, bytes, tuple[Any, ...], int | None] | None: ...
def columns(rows: bytes, /) -> tuple[bytes, bytes, bytes, bytes, bytes]: ...
def decode_many(
    messages: list[Any],
    start: int,
    routes: dict[str, Any],
    received_at: int,
    max_metrics: int,
    max_payload: int,
    /,
) -> tuple[int, bytes, tuple[Any, ...], list[tuple[Any, ...]]]: ...
def pack_blocks(
    rows: bytes,
    records: tuple[Any, ...],
    known: dict[int, int],
    new: list[Any],
    runs: list[tuple[Any, ...]],
    received: list[int],
    contexts: list[Any],
    context_json: Any,
    segment: bool,
    /,
) -> bytes: ...
def join_blocks(records: list[Any], /) -> tuple[Any, ...]: ...
