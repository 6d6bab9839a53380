"""A fast decoder for ordinary NDATA/DDATA payloads (pure; the typed codec is the reference).

Most DATA metrics carry an alias (or name), a timestamp, maybe a datatype and
one scalar value.  For those, the typed decoder (:mod:`uns.sparkplug.codec`)
builds a :class:`~uns.sparkplug.payload.Metric` per metric and asks protobuf
about a dozen fields, each a costly call into upb.  This module parses the same
bytes with a *lean* schema instead and reads only what a sample needs.

The lean schema has the field numbers and wire types of ``sparkplug_b.proto``,
with two differences:

* Every field an ordinary DATA metric does not use (``is_historical``,
  ``is_transient``, ``is_null``, ``metadata``, ``properties`` and the
  ``bytes``/``dataset``/``template``/``extension`` values; ``uuid`` and
  ``body`` of the payload) is a member of one oneof ``unusual``, as
  ``bytes`` for the message-typed ones.  A single ``HasField("unusual")``
  then tells whether any of them is present; the caller falls back to the
  typed path for such a message.  The wire type of each field is the one of
  the full schema, so a field protobuf would ignore there (wrong wire type,
  unknown number, payload extension) is ignored here too.
* It is proto3, so protobuf itself refuses a ``name`` or ``string_value``
  that is not UTF-8 (the typed decoder rejects those metrics): the parse
  fails and the caller falls back.

So whenever :func:`parse_data` returns a message, the full schema parses the
same bytes to the same name/alias/timestamp/datatype/value of every metric,
and none of the other fields is set.  :func:`data_samples` then types each
value exactly as the typed path does (the same converters), and returns None
for anything that path would reject or treat specially (unknown alias or
name, a value its datatype cannot hold, an unknown datatype code): the caller
falls back and the typed path produces the rejections.  The equivalence is
tested against the typed path over generated payloads (``tests/test_session_fast.py``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from uns.core.events import Quality, Sample
from uns.errors import SparkplugDecodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.births import BornMetric
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import METRIC_CONVERTERS, PROPERTY_ONLY_TYPES, MetricValue

__all__ = ["LeanPayload", "data_samples", "parse_data"]

_F = descriptor_pb2.FieldDescriptorProto
#: metric fields an ordinary DATA metric reads (the rest go into ``unusual``)
_METRIC_PLAIN = frozenset({"name", "alias", "timestamp", "datatype"})
_METRIC_VALUES = frozenset(
    {"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value"}
)
_PAYLOAD_PLAIN = frozenset({"timestamp", "seq"})


def _lean_message(
    out: descriptor_pb2.DescriptorProto,
    full: Any,
    plain: frozenset[str],
    values: frozenset[str],
    nested: dict[str, str],
) -> None:
    """Copy ``full``'s fields into ``out``: ``plain`` ones as proto3 optional,
    ``values`` into oneof ``value``, everything else into oneof ``unusual``."""
    value_index = unusual_index = -1
    for field in full.fields:
        lean = out.field.add(name=field.name, number=field.number, label=_F.LABEL_OPTIONAL)
        kind = field.type
        if field.name in nested:
            lean.label = _F.LABEL_REPEATED
            lean.type = _F.TYPE_MESSAGE
            lean.type_name = nested[field.name]
            continue
        unparsed = kind == _F.TYPE_STRING and field.name not in plain | values
        if kind in (_F.TYPE_MESSAGE, _F.TYPE_GROUP) or unparsed:
            kind = _F.TYPE_BYTES  # same wire type, not parsed (and no UTF-8 check: the typed path decides)
        lean.type = kind
        if field.name in plain:
            lean.proto3_optional = True
            out.oneof_decl.add(name=f"_{field.name}")
            lean.oneof_index = len(out.oneof_decl) - 1
        elif field.name in values:
            if value_index < 0:
                out.oneof_decl.add(name="value")
                value_index = len(out.oneof_decl) - 1
            lean.oneof_index = value_index
        else:
            if unusual_index < 0:
                out.oneof_decl.add(name="unusual")
                unusual_index = len(out.oneof_decl) - 1
            lean.oneof_index = unusual_index
    # proto3 wants synthetic oneofs (of ``optional`` fields) after the real ones
    _synthetic_oneofs_last(out)


def _synthetic_oneofs_last(msg: descriptor_pb2.DescriptorProto) -> None:
    names = [o.name for o in msg.oneof_decl]
    order = sorted(range(len(names)), key=lambda i: names[i].startswith("_"))
    position = {old: new for new, old in enumerate(order)}
    for field in msg.field:
        if field.HasField("oneof_index"):
            field.oneof_index = position[field.oneof_index]
    del msg.oneof_decl[:]
    for old in order:
        msg.oneof_decl.add(name=names[old])


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="uns_lean_sparkplug.proto", package="uns.lean", syntax="proto3"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    full = pb.Payload.DESCRIPTOR
    _lean_message(metric, full.nested_types_by_name["Metric"], _METRIC_PLAIN, _METRIC_VALUES, {})
    _lean_message(payload, full, _PAYLOAD_PLAIN, frozenset(), {"metrics": ".uns.lean.Payload.Metric"})
    pool = descriptor_pool.DescriptorPool()  # private: nothing else sees these names
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("uns.lean.Payload"))


#: the lean message class (see the module docstring)
LeanPayload: Any = _build()
_FROM_STRING = LeanPayload.FromString

#: datatype by wire code: 0 (Unknown) means "not stated", as in the typed decoder
_STATED: list[DataType | None] = [None, *(DataType(code) for code in range(1, len(DataType)))]
_MAX_CODE = len(_STATED) - 1
_GOOD = Quality.GOOD


def parse_data(raw: bytes) -> Any | None:
    """The lean message of an ordinary DATA payload, or None: use the typed path."""
    try:
        msg = _FROM_STRING(raw)
    except DecodeError:
        return None
    if msg.HasField("unusual"):
        return None
    return msg


def _typed_value(
    record: BornMetric, raw: Any, has_value: bool, code: int
) -> tuple[MetricValue, DataType] | None:
    """(value, datatype) as the typed decoder and the session type a DATA value; None when
    either would refuse it.  ``code`` is the stated datatype (0: none)."""
    if code:
        if code > _MAX_CODE:
            return None  # the decoder refuses an unknown datatype code
        datatype = _STATED[code]
        assert datatype is not None
        if not has_value:
            return None if datatype in PROPERTY_ONLY_TYPES else (None, datatype)
        try:
            return METRIC_CONVERTERS[datatype](raw), datatype  # the decoder's conversion
        except SparkplugDecodeError:
            return None
    if not has_value:
        return None, record.datatype
    try:
        return record.convert(raw), record.datatype  # the session's conversion to the born type
    except SparkplugDecodeError:
        return None


def data_samples(
    metrics: Any,
    by_alias: dict[int, BornMetric],
    by_name: dict[str, BornMetric],
    group_id: str,
    edge_node_id: str,
    device_id: str | None,
    payload_ts: int,
    received_at: int,
    seq: int | None,
    bdseq: int | None,
) -> list[Sample] | None:
    """The samples of a lean message's metrics, as the typed path makes them; None when
    any metric needs that path (unusual fields, unborn, not convertible)."""
    samples: list[Sample] = []
    append = samples.append
    for m in metrics:
        if m.HasField("unusual"):
            return None
        alias = m.alias
        # (an absent name reads "", which the typed path looks up too)
        record = by_alias.get(alias) if alias or m.HasField("alias") else by_name.get(m.name)
        if record is None:
            return None
        # the field the born datatype usually travels in: a truthy read proves it is the one set
        kind = record.wire_kind
        raw: Any = None if kind is None else getattr(m, kind)
        code = m.datatype
        if raw and code in record.exact_codes:
            value, datatype = raw, record.datatype  # already typed: what the converters return
        else:
            if not raw:
                kind = m.WhichOneof("value")
                raw = None if kind is None else getattr(m, kind)
            typed = _typed_value(record, raw if kind is not None else None, kind is not None, code)
            if typed is None:
                return None
            value, datatype = typed
        if record.is_sample:
            ts = m.timestamp
            if not ts and not m.HasField("timestamp"):
                ts = payload_ts
            append(
                Sample(
                    group_id, edge_node_id, device_id, record.name, datatype, value, ts, received_at,
                    _GOOD, False, False, seq, bdseq, record.alias, "", record.unit,
                )
            )  # fmt: skip
    return samples
