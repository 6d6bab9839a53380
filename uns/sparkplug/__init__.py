"""Sparkplug B 3.0: topics, payload codec, datatypes, host STATE (pure, no I/O)."""

from uns.sparkplug.codec import convert_wire_value, decode_payload, decode_payload_lenient, encode_payload
from uns.sparkplug.compression import (
    compress_payload,
    is_compressed,
    unwrap_compressed,
    unwrap_compressed_lenient,
)
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import (
    DataSet,
    MetaData,
    Metric,
    Parameter,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
)
from uns.sparkplug.state import HostState, format_state, parse_state
from uns.sparkplug.topic import MessageType, Topic, parse_topic

__all__ = [
    "DataSet",
    "DataType",
    "HostState",
    "MessageType",
    "MetaData",
    "Metric",
    "Parameter",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "Template",
    "Topic",
    "compress_payload",
    "convert_wire_value",
    "decode_payload",
    "decode_payload_lenient",
    "encode_payload",
    "format_state",
    "is_compressed",
    "parse_state",
    "parse_topic",
    "unwrap_compressed",
    "unwrap_compressed_lenient",
]
