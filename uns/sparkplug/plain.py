"""The decoder's fast path for ordinary DATA payloads (see :mod:`uns.sparkplug.codec`).

:func:`decode_plain` parses the bytes with two lean schemas built from the real
one and builds the metrics from the few fields present, or returns None when
anything is unusual, so that the full path decodes the same bytes and every
answer and every error stays the full path's.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from uns.errors import SparkplugDecodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.decodetables import (
    EXACT,
    INT_BELOW,
    MAX_CODE,
    METRIC_CONVERTER,
    PARSE_ERRORS,
    PROPERTY_ONLY_CODES,
    STATED_TYPE,
    USUAL_FIELD,
    has_field,
    new_object,
    which_oneof,
)
from uns.sparkplug.payload import (
    Metric,
    Payload,
)

__all__ = ["decode_plain"]

# ---------------------------------------------------------------- the plain path's schemas

_F = descriptor_pb2.FieldDescriptorProto
_LEAN_PACKAGE = "uns.codec.lean"
#: metric fields the plain path reads (with presence)
_METRIC_READ = ("name", "alias", "timestamp", "datatype")
_METRIC_FLAGS = ("is_historical", "is_transient", "is_null")
#: the scalar members of the value oneof (bytes_value is for arrays, Bytes and File:
#: left to the full path with the message-typed ones)
_METRIC_SCALARS = ("int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value")


def _add_field(
    out: descriptor_pb2.DescriptorProto, full: Any, kind: int, oneof: str | None = None
) -> descriptor_pb2.FieldDescriptorProto:
    """Declare ``full``'s field (same number, so same wire type as long as ``kind`` keeps it)."""
    field = out.field.add(name=full.name, number=full.number, label=_F.LABEL_OPTIONAL, type=kind)
    if oneof == "":  # proto3 ``optional``: a oneof of its own, declared after the real ones
        field.proto3_optional = True
        oneof = f"_{full.name}"
        out.oneof_decl.add(name=oneof)
    if oneof is not None:
        field.oneof_index = [o.name for o in out.oneof_decl].index(oneof)
    return field


def _unparsed(full: Any) -> int:
    """A length-delimited type that is kept as is: bytes (no UTF-8 check, no nested parse)."""
    return _F.TYPE_BYTES if full.type in (_F.TYPE_STRING, _F.TYPE_MESSAGE) else full.type


def _lean_schemas() -> tuple[Any, Any]:
    """The two message classes of the plain path (see the module docstring).

    ``Payload``: timestamp and seq with presence, uuid and body in oneof
    ``unusual``; each metric with :data:`_METRIC_READ` (presence), the flags,
    and the scalar values in oneof ``value``; the other metric fields are not
    declared (``Summary`` tells when any is there).  The schema is proto3, so
    protobuf refuses a name or string value that is not UTF-8 (the full path
    then decides).

    ``Summary``: field 2 as a singular message, so all metrics merge into one:
    name and datatype with presence (some metric has it), the flags in oneof
    ``flags``, the fields the plain path does not handle in oneof ``unusual``
    (bytes, not parsed), and the rest declared only so they are not kept as
    unknown fields.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="uns_codec_lean.proto", package=_LEAN_PACKAGE, syntax="proto3"
    )
    full_payload = pb.Payload.DESCRIPTOR
    full_metric = full_payload.nested_types_by_name["Metric"]

    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for field in full_metric.fields:
        if field.name in _METRIC_SCALARS:
            _add_field(metric, field, field.type, "value")
        elif field.name in _METRIC_FLAGS:
            _add_field(metric, field, field.type)
    for field in full_metric.fields:
        if field.name in _METRIC_READ:
            _add_field(metric, field, field.type, "")
    payload.oneof_decl.add(name="unusual")
    for field in full_payload.fields:
        if field.name == "metrics":
            lean = _add_field(payload, field, _F.TYPE_MESSAGE)
            lean.label = _F.LABEL_REPEATED
            lean.type_name = f".{_LEAN_PACKAGE}.Payload.Metric"
        elif field.name not in ("timestamp", "seq"):
            _add_field(payload, field, _unparsed(field), "unusual")
    for field in full_payload.fields:
        if field.name in ("timestamp", "seq"):
            _add_field(payload, field, field.type, "")

    summary = file.message_type.add(name="Summary")
    merged = summary.nested_type.add(name="Merged")
    merged.oneof_decl.add(name="flags")
    merged.oneof_decl.add(name="unusual")
    for field in full_metric.fields:
        if field.name in _METRIC_FLAGS:
            _add_field(merged, field, field.type, "flags")
        elif field.name in ("alias", "timestamp", *_METRIC_SCALARS):
            _add_field(merged, field, _unparsed(field))
        elif field.name not in ("name", "datatype"):
            _add_field(merged, field, _unparsed(field), "unusual")
    for field in full_metric.fields:
        if field.name in ("name", "datatype"):
            _add_field(merged, field, _unparsed(field), "")
    lean = _add_field(summary, full_payload.fields_by_name["metrics"], _F.TYPE_MESSAGE)
    lean.type_name = f".{_LEAN_PACKAGE}.Summary.Merged"

    pool = descriptor_pool.DescriptorPool()  # private: nothing else sees these names
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_LEAN_PACKAGE}.Payload")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_LEAN_PACKAGE}.Summary")),
    )


_LeanPayload, _Summary = _lean_schemas()
_parse_lean = _LeanPayload.FromString
_parse_summary = _Summary.FromString
#: per wire code, what the plain path's loop needs in one index: datatype, usual field,
#: and the unchanged type and bound (see unchanged_tables)
_PLAIN_INFO: list[tuple[DataType | None, str, type | None, int]] = list(
    zip(STATED_TYPE, USUAL_FIELD, EXACT, INT_BELOW, strict=True)
)


def decode_plain(data: bytes, max_metrics: int | None = None) -> Payload | None:
    """The payload of an ordinary DATA message; None when the full path must decide
    (also when it holds more than ``max_metrics`` metrics: the full path refuses it)."""
    try:
        merged = _parse_summary(data).metrics
        if has_field(merged, "unusual"):
            return None
        msg = _parse_lean(data)
    except PARSE_ERRORS:
        return None
    if has_field(msg, "unusual") or (max_metrics is not None and len(msg.metrics) > max_metrics):
        return None
    named = has_field(merged, "name")
    typed = has_field(merged, "datatype")
    flagged = has_field(merged, "flags")
    metrics: list[Metric] = []
    append = metrics.append
    name: str | None = None
    datatype: DataType | None = None
    is_historical = is_transient = is_null = False
    info = _PLAIN_INFO
    for m in msg.metrics[:]:  # (a slice: iterating the container ends in a costly IndexError)
        # a truthy read proves the field is there; HasField only for the falsy ones
        if named:
            name = m.name
            if not name and not has_field(m, "name"):
                name = None
        alias: int | None = m.alias
        if not alias and not has_field(m, "alias"):
            alias = None
        timestamp: int | None = m.timestamp
        if not timestamp and not has_field(m, "timestamp"):
            timestamp = None
        # the value oneof holds one field at most, so a truthy read is the one;
        # only a falsy value (or none) needs WhichOneof
        if typed:
            code = m.datatype
            if code > MAX_CODE:
                return None
            datatype, usual, exact, below = info[code]
            value: Any = getattr(m, usual)
        else:
            value = m.double_value or m.int_value
        if not value:
            kind = which_oneof(m, "value")
            value = None if kind is None else getattr(m, kind)
        if flagged:
            is_historical = m.is_historical
            is_transient = m.is_transient
            is_null = m.is_null
            if is_null:
                value = None
        if datatype is not None and (type(value) is not exact or (exact is int and value >= below)):
            # not already its typed value (None is not either)
            if value is None:
                if code in PROPERTY_ONLY_CODES:
                    return None
            else:
                convert = METRIC_CONVERTER[code]
                assert convert is not None  # every datatype has a metric converter
                try:
                    value = convert(value)
                except SparkplugDecodeError:
                    return None
        # Metric(...) without __init__ (module docstring)
        metric: Metric = new_object(Metric)
        metric.name = name
        metric.alias = alias
        metric.timestamp = timestamp
        metric.datatype = datatype
        metric.is_historical = is_historical
        metric.is_transient = is_transient
        metric.is_null = is_null
        metric.metadata = None
        metric.properties = None
        metric.value = value
        append(metric)
    timestamp = msg.timestamp
    if not timestamp and not has_field(msg, "timestamp"):
        timestamp = None
    seq: int | None = msg.seq
    if not seq and not has_field(msg, "seq"):
        seq = None
    payload: Payload = new_object(Payload)  # Payload(...) without __init__
    payload.timestamp = timestamp
    payload.metrics = metrics
    payload.seq = seq
    payload.uuid = None
    payload.body = None
    return payload
