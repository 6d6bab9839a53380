"""Sparkplug B 3.0: topics, payload codec, datatypes, host STATE (pure, no I/O)."""

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
from uns.sparkplug.topic import MessageType, Topic, parse_topic

__all__ = [
    "DataSet",
    "DataType",
    "MessageType",
    "MetaData",
    "Metric",
    "Parameter",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "Template",
    "Topic",
    "parse_topic",
]
