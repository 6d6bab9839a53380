"""Types of the MQTT 3.1.1 reader's C run of PUBLISH packets (uns/mqtt/wire/_fastwire.c)."""

from typing import Any

def publishes(
    buf: bytes, pos: int, messages: list[Any], replies: bytearray, topics: dict[bytes, Any], /
) -> int: ...
