"""Sparkplug B payload codec: protobuf bytes <-> :mod:`uns.sparkplug.payload` objects.

Decoding takes untrusted bytes.  It returns a :class:`Payload` or raises
:class:`SparkplugDecodeError`, nothing else: protobuf errors are mapped in
:func:`_parse_envelope`, and every value is checked against the Python type its
datatype needs before it is used.  Memory stays proportional to the input, and
the per-message limits (:mod:`uns.sparkplug.limits`: payload bytes, metrics,
Template/PropertySet nesting, by default :data:`MAX_NESTING` levels) are checked at
the entry: a message over one raises :class:`~uns.errors.SparkplugLimitError` and
is refused whole, also by the lenient decoder.  :func:`decode_payload_steps` is the
lenient decoder in slices (:mod:`uns.sparkplug.steps`), for the engine's largest
messages.

One bad metric must not cost the whole payload (docs/sparkplug.md section 6):
:func:`decode_payload_lenient` keeps the good metrics and reports the bad ones
by index; :func:`decode_payload` is the strict form and raises on the first.

Wire conventions (decode accepts what field libraries send, encode is canonical):

* Integers: decode accepts ``int_value`` or ``long_value`` for every integer
  type and DateTime.  Signed types are masked to their width and read as two's
  complement, so Int8 -1 decodes from 255, 4294967295 and 2**64-1 alike.
  Unsigned values wider than their type are rejected.  Encode writes
  ``int_value`` for 8/16/32-bit types and ``long_value`` for 64-bit ones and
  DateTime, signed values masked to their width (Int8 -1 -> 255, as Python Tahu).
* DateTime is an ``int`` of ms since the epoch, read as signed 64-bit.
* Float/Double decode from ``float_value`` or ``double_value`` (a Float is
  rounded to 32 bits either way; one too large for 32 bits is refused); encode
  writes ``float_value`` for Float (same rounding and refusal) and
  ``double_value`` for Double.  So whatever decodes also re-encodes unchanged.
* A metric, property or parameter without datatype (or datatype 0, Unknown)
  keeps the raw wire value; :func:`convert_wire_value` types it later.  Raw
  values encode by Python type: bool, int (``int_value`` below 2**32, else
  ``long_value``), float (``double_value``), str, bytes, DataSet, Template.
* ``is_null`` wins over a value: a null metric decodes to ``None`` and
  encodes without a value field.

The codec is five modules: this one decodes (with :mod:`uns.sparkplug.plain`, the
fast path, and :mod:`uns.sparkplug.decodetables`, what both paths look up), :mod:`uns.sparkplug.encode`
encodes and :mod:`uns.sparkplug.payload` holds the per-datatype value rules
both share.  :func:`encode_payload` and :func:`convert_wire_value` are
re-exported here, so ``uns.sparkplug.codec`` stays the one import for both
directions.

Speed.  Every protobuf field read is a call into upb, and building each
object through its dataclass ``__init__`` costs more than its fields do, so
the decoder reads as few fields as it can:

* Most payloads are ordinary DATA: metrics with a name or alias, timestamp,
  maybe a datatype and one scalar value.  :func:`uns.sparkplug.plain.decode_plain` parses those
  bytes twice with two lean schemas built from the real one (same field
  numbers and wire types): one gives each metric's plain fields, the other
  (:data:`_Summary`) parses every metric into *one* message (protobuf merges
  repeats of a singular message field), so one ``HasField`` per payload tells
  whether any metric has a name, a datatype, a flag, or a field the lean path
  leaves to the full one (metadata, properties, bytes, DataSet, Template,
  extension).  When nothing is unusual it builds the metrics from the few
  fields present; when anything is, or a value does not convert, it returns
  None and the full path decodes the same bytes again, so every error, and
  every answer, is the full path's (``tests/test_codec_speed_api.py`` checks
  the two agree).
* The full path (:func:`_decode_metric`, births and everything else) reads
  what it must and skips converter calls for values that already have their
  Python type.
* Both build :class:`Metric`, :class:`PropertyValue`, :class:`PropertySet`
  (and the plain path its :class:`Payload`) with ``object.__new__`` and slot
  stores: the same objects as their constructors give, at half the cost (the
  import-time asserts below hold the field lists to that).
"""

from __future__ import annotations

from uns.errors import SparkplugDecodeError, SparkplugLimitError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.decodetables import (
    DATATYPE_BY_CODE,
    EXACT,
    INT_BELOW,
    MAX_CODE,
    METRIC_CONVERTER,
    PARSE_ERRORS,
    PROPERTY_CONVERTER,
    PROPERTY_ONLY_CODES,
    STATED_TYPE,
    USUAL_FIELD,
    has_field,
    new_object,
    typed_value,
    which_oneof,
)
from uns.sparkplug.encode import encode_payload
from uns.sparkplug.limits import (
    DEFAULT_LIMITS,
    MessageLimits,
    check_metric_count,
    check_nesting,
    check_payload_size,
)
from uns.sparkplug.payload import (
    BASIC_CONVERTERS,
    BASIC_TYPES,
    MAX_NESTING,
    DataSet,
    DataSetScalar,
    MetaData,
    Metric,
    MetricValue,
    Parameter,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
    convert_wire_value,
)
from uns.sparkplug.plain import decode_plain
from uns.sparkplug.steps import SLICE, Steps, run_steps

__all__ = [
    "MAX_NESTING",
    "convert_wire_value",
    "decode_payload",
    "decode_payload_lenient",
    "decode_payload_steps",
    "encode_payload",
]


# ---------------------------------------------------------------- the full path


class _Budget:
    """The limits of one message as its decoding goes: metrics left (Template members
    count too), and the nesting limit."""

    __slots__ = ("limits", "metrics_left")

    def __init__(self, limits: MessageLimits, top_level: int) -> None:
        check_metric_count(top_level, limits)
        self.limits = limits
        self.metrics_left = limits.max_metrics - top_level

    def take(self, count: int) -> None:
        self.metrics_left -= count
        if self.metrics_left < 0:
            check_metric_count(self.limits.max_metrics - self.metrics_left, self.limits)


def _datatype(code: int) -> DataType | None:
    if code > MAX_CODE:
        raise SparkplugDecodeError(f"unknown datatype code {code}")
    return STATED_TYPE[code]


def _wire_value(holder: object, kind: str) -> object:
    """The value of oneof field ``kind``, refusing strings that are not UTF-8."""
    value = getattr(holder, kind)
    if kind == "string_value" and type(value) is not str:
        # upb hands out an invalid-UTF-8 proto2 string field as bytes
        raise SparkplugDecodeError("string value is not valid UTF-8")
    return value


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        raise SparkplugDecodeError(f"{what} is not valid UTF-8")
    return value


def _optional_text(msg: object, field: str) -> str | None:
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    return _text(getattr(msg, field), field)


def _decode_metadata(md: pb.Payload.MetaData) -> MetaData:
    return MetaData(
        md.is_multi_part if md.HasField("is_multi_part") else None,
        _optional_text(md, "content_type"),
        md.size if md.HasField("size") else None,
        md.seq if md.HasField("seq") else None,
        _optional_text(md, "file_name"),
        _optional_text(md, "file_type"),
        _optional_text(md, "md5"),
        _optional_text(md, "description"),
    )


def _decode_property_set(ps: pb.Payload.PropertySet, depth: int, budget: _Budget) -> PropertySet:
    if depth > budget.limits.max_nesting:
        check_nesting(depth, budget.limits, "PropertySet")
    keys, values = ps.keys, ps.values
    count = len(keys)
    if count != len(values):
        raise SparkplugDecodeError(f"PropertySet has {count} keys but {len(values)} values")
    items: dict[str, PropertyValue] = {}
    # every metric of a BIRTH carries properties: the scalar case is inlined.  By
    # index: iterating (or slicing) the containers costs more, the end of an
    # iteration is an IndexError that upb formats a message for
    for index in range(count):
        key, pv = keys[index], values[index]
        if type(key) is not str:
            raise SparkplugDecodeError("property key is not valid UTF-8")
        if key in items:
            raise SparkplugDecodeError(f"duplicate property key {key!r}")
        code = pv.type
        if code > MAX_CODE:
            raise SparkplugDecodeError(f"unknown datatype code {code}")
        prop: PropertyValue = new_object(PropertyValue)  # PropertyValue(...) without __init__
        prop.type = dt = STATED_TYPE[code]
        prop.is_null = is_null = pv.is_null
        prop.value = None
        items[key] = prop
        if is_null:
            continue
        # the value oneof holds one field at most: a truthy read of the field its
        # type usually travels in is the value; anything else asks WhichOneof
        raw: object = getattr(pv, USUAL_FIELD[code])
        if not raw:
            kind = which_oneof(pv, "value")
            if kind is None:
                continue
            raw = (
                _decode_nested_property(pv, kind, depth, budget)
                if kind in _NESTED_PROPERTY_KINDS
                else getattr(pv, kind)
            )
        if type(raw) is bytes:  # upb's answer for a string_value that is not UTF-8
            raise SparkplugDecodeError("string value is not valid UTF-8")
        if dt is not None:
            exact = EXACT[code]  # typed_value's own check inlined: most values need no converter
            if type(raw) is not exact or (exact is int and raw >= INT_BELOW[code]):  # type: ignore[operator]
                raw = typed_value(code, raw, PROPERTY_CONVERTER, "property")
        prop.value = raw  # type: ignore[assignment]  # checked by the converter
    result: PropertySet = new_object(PropertySet)
    result.items = items
    return result


_NESTED_PROPERTY_KINDS = frozenset({"propertyset_value", "propertysets_value", "extension_value"})


def _decode_nested_property(pv: pb.Payload.PropertyValue, kind: str, depth: int, budget: _Budget) -> object:
    if kind == "propertyset_value":
        return _decode_property_set(pv.propertyset_value, depth + 1, budget)
    if kind == "propertysets_value":
        return [_decode_property_set(ps, depth + 1, budget) for ps in pv.propertysets_value.propertyset]
    raise SparkplugDecodeError("property extension values are not supported")


def _decode_basic_value(dt: DataType | None, kind: str | None, holder: object, what: str) -> DataSetScalar:
    """A DataSet cell or Template parameter value (basic types only)."""
    if kind is None:
        return None
    if kind == "extension_value":
        raise SparkplugDecodeError(f"{what} extension values are not supported")
    raw = _wire_value(holder, kind)
    if dt is None:
        return raw  # type: ignore[return-value]  # a protobuf scalar
    convert = BASIC_CONVERTERS.get(dt)
    if convert is None:
        raise SparkplugDecodeError(f"{dt.name} is not a basic type, not allowed in a {what}")
    return convert(raw)  # type: ignore[return-value]  # basic converters give scalars


def _decode_dataset(ds: pb.Payload.DataSet) -> DataSet:
    columns = [_text(c, "DataSet column name") for c in ds.columns]
    types: list[DataType] = []
    for code in ds.types:
        dt = DATATYPE_BY_CODE.get(code)
        if dt is None or dt not in BASIC_TYPES:
            raise SparkplugDecodeError(f"DataSet column type {code} is not a basic type")
        types.append(dt)
    width = len(columns)
    if len(types) != width:
        raise SparkplugDecodeError(f"DataSet has {width} columns but {len(types)} types")
    num = ds.num_of_columns if ds.HasField("num_of_columns") else None
    if num is not None and num != width:
        raise SparkplugDecodeError(f"DataSet num_of_columns {num} but {width} columns")
    converters = [BASIC_CONVERTERS[dt] for dt in types]
    rows: list[list[DataSetScalar]] = []
    for index, row in enumerate(ds.rows):
        elements = row.elements
        if len(elements) != width:
            raise SparkplugDecodeError(f"DataSet row {index} has {len(elements)} cells, expected {width}")
        cells: list[DataSetScalar] = []
        for convert, cell in zip(converters, elements, strict=True):
            kind = cell.WhichOneof("value")
            if kind is None:
                cells.append(None)
            elif kind == "extension_value":
                raise SparkplugDecodeError("DataSet extension values are not supported")
            else:
                cells.append(convert(_wire_value(cell, kind)))  # type: ignore[arg-type]  # scalar
        rows.append(cells)
    return DataSet(columns, types, rows, num)


def _decode_parameter(param: pb.Payload.Template.Parameter) -> Parameter:
    dt = _datatype(param.type)
    value = _decode_basic_value(dt, param.WhichOneof("value"), param, "Template parameter")
    return Parameter(_optional_text(param, "name"), dt, value)


def _decode_template(t: pb.Payload.Template, depth: int, budget: _Budget) -> Template:
    if depth > budget.limits.max_nesting:
        check_nesting(depth, budget.limits, "Template")
    members = t.metrics
    budget.take(len(members))
    return Template(
        _optional_text(t, "version"),
        [_decode_metric(m, depth, budget) for m in members],
        [_decode_parameter(p) for p in t.parameters],
        _optional_text(t, "template_ref"),
        t.is_definition if t.HasField("is_definition") else None,
    )


def _decode_metric(m: pb.Payload.Metric, depth: int, budget: _Budget) -> Metric:
    # plain field reads are cheaper than HasField, which is asked only when a
    # read gives the default (absent, or really "" / 0)
    name: str | None = m.name
    if type(name) is not str:
        raise SparkplugDecodeError("metric name is not valid UTF-8")
    if not name and not has_field(m, "name"):
        name = None
    alias: int | None = m.alias
    if not alias and not has_field(m, "alias"):
        alias = None
    timestamp: int | None = m.timestamp
    if not timestamp and not has_field(m, "timestamp"):
        timestamp = None
    code = m.datatype
    if code > MAX_CODE:
        raise SparkplugDecodeError(f"unknown datatype code {code}")
    dt = STATED_TYPE[code]
    is_null = m.is_null
    value: MetricValue = None
    if not is_null:
        # a truthy read of the field the type usually travels in is the value
        # (the oneof holds one field at most); anything else asks WhichOneof
        usual = USUAL_FIELD[code]
        value = getattr(m, usual)
        kind: str | None = usual
        if not value:
            kind = which_oneof(m, "value")
            if kind is None:
                value = None
            elif kind == "template_value":
                value = _decode_template(m.template_value, depth + 1, budget)
            elif kind == "dataset_value":
                value = _decode_dataset(m.dataset_value)
            elif kind == "extension_value":
                raise SparkplugDecodeError("metric extension values are not supported")
            else:
                value = getattr(m, kind)
        if kind == "string_value" and type(value) is not str:
            raise SparkplugDecodeError("string value is not valid UTF-8")  # upb gives bytes
        if kind is not None and dt is not None:
            value = typed_value(code, value, METRIC_CONVERTER, "metric")
    if value is None and code in PROPERTY_ONLY_CODES:
        raise SparkplugDecodeError(f"{DataType(code).name} is not a valid metric datatype")
    metric: Metric = new_object(Metric)  # Metric(...) without __init__ (module docstring)
    metric.name = name
    metric.alias = alias
    metric.timestamp = timestamp
    metric.datatype = dt
    metric.is_historical = m.is_historical
    metric.is_transient = m.is_transient
    metric.is_null = is_null
    metric.metadata = _decode_metadata(m.metadata) if has_field(m, "metadata") else None
    metric.properties = (
        _decode_property_set(m.properties, depth + 1, budget) if has_field(m, "properties") else None
    )
    metric.value = value
    return metric


def _parse_envelope(data: bytes) -> pb.Payload:
    """The one place protobuf's exceptions become :class:`SparkplugDecodeError`."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except PARSE_ERRORS as exc:
        raise SparkplugDecodeError(f"not a Sparkplug B protobuf payload: {exc}") from exc
    return msg


def _metric_label(m: pb.Payload.Metric, index: int) -> str:
    if m.HasField("name") and type(m.name) is str:
        return f"metric {index} ({m.name!r})"
    if m.HasField("alias"):
        return f"metric {index} (alias {m.alias})"
    return f"metric {index}"


def _decode(data: bytes, *, lenient: bool, limits: MessageLimits) -> tuple[Payload, list[tuple[int, str]]]:
    check_payload_size(len(data), limits)
    plain = decode_plain(data, limits.max_metrics)
    if plain is not None:
        return plain, []  # nothing in it the full path would reject
    return run_steps(_decode_full(data, lenient=lenient, limits=limits))


def _decode_full(
    data: bytes, *, lenient: bool, limits: MessageLimits
) -> Steps[tuple[Payload, list[tuple[int, str]]]]:
    """Decode with the full schema: every payload, the reference :func:`_decode_plain` must
    match.  A generator: it pauses after every :data:`~uns.sparkplug.steps.SLICE` metrics."""
    msg = _parse_envelope(data)
    wire_metrics = msg.metrics[:]  # (a slice, as in _decode_plain)
    budget = _Budget(limits, len(wire_metrics))
    metrics: list[Metric] = []
    rejected: list[tuple[int, str]] = []
    for index, m in enumerate(wire_metrics):
        if index and not index % SLICE:
            yield
        try:
            metrics.append(_decode_metric(m, 0, budget))
        except SparkplugLimitError:
            raise  # the whole message is refused, not the metric
        except SparkplugDecodeError as exc:
            reason = f"{_metric_label(m, index)}: {exc.reason}"
            if not lenient:
                raise SparkplugDecodeError(reason) from exc
            rejected.append((index, reason))
    payload = Payload(
        msg.timestamp if msg.HasField("timestamp") else None,
        metrics,
        msg.seq if msg.HasField("seq") else None,
        _optional_text(msg, "uuid"),
        msg.body if msg.HasField("body") else None,
    )
    return payload, rejected


def decode_payload(data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Payload:
    """Decode a Sparkplug B payload; any problem raises :class:`SparkplugDecodeError`
    (:class:`~uns.errors.SparkplugLimitError` for a message over one of ``limits``)."""
    return _decode(data, lenient=False, limits=limits)[0]


def decode_payload_lenient(
    data: bytes, limits: MessageLimits = DEFAULT_LIMITS
) -> tuple[Payload, list[tuple[int, str]]]:
    """Decode, keeping only the usable metrics: ``(payload, [(metric index, reason), ...])``.

    The envelope itself must parse and the message be within ``limits``, else
    :class:`SparkplugDecodeError` (:class:`~uns.errors.SparkplugLimitError`).
    """
    return _decode(data, lenient=True, limits=limits)


def decode_payload_steps(
    data: bytes, limits: MessageLimits = DEFAULT_LIMITS
) -> Steps[tuple[Payload, list[tuple[int, str]]]]:
    """:func:`decode_payload_lenient` in slices: a generator pausing after every
    :data:`~uns.sparkplug.steps.SLICE` metrics, returning what it returns."""
    check_payload_size(len(data), limits)
    plain = decode_plain(data, limits.max_metrics)
    if plain is not None:
        return plain, []
    return (yield from _decode_full(data, lenient=True, limits=limits))
