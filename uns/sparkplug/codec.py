"""Sparkplug B payload codec: protobuf bytes <-> :mod:`uns.sparkplug.payload` objects.

Decoding takes untrusted bytes.  It returns a :class:`Payload` or raises
:class:`SparkplugDecodeError`, nothing else: protobuf errors are mapped in
:func:`_parse_envelope`, and every value is checked against the Python type its
datatype needs before it is used.  Memory stays proportional to the input, and
Template/PropertySet nesting deeper than :data:`MAX_NESTING` is refused.

One bad metric must not cost the whole payload (SPARKPLUG.md section 6):
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
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from google.protobuf.message import DecodeError

from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.arrays import pack_array, unpack_array
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
from uns.sparkplug.payload import (
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
)

__all__ = [
    "MAX_NESTING",
    "convert_wire_value",
    "decode_payload",
    "decode_payload_lenient",
    "encode_payload",
]

#: deepest Template-in-Template / PropertySet-in-PropertySet nesting accepted
MAX_NESTING = 32

_DATATYPE_BY_CODE: dict[int, DataType] = {d.value: d for d in DataType}
_BASIC_TYPES = (
    frozenset(SIGNED_WIDTH)
    | frozenset(UNSIGNED_WIDTH)
    | {
        DataType.Float,
        DataType.Double,
        DataType.Boolean,
        DataType.String,
        DataType.DateTime,
        DataType.Text,
        DataType.UUID,
    }
)
_PROPERTY_ONLY_TYPES = frozenset({DataType.PropertySet, DataType.PropertySetList})

Converter = Callable[[object], MetricValue]


# ---------------------------------------------------------------- raw -> typed


def _mismatch(datatype: DataType, raw: object) -> SparkplugDecodeError:
    return SparkplugDecodeError(f"{datatype.name} cannot hold a {type(raw).__name__} wire value")


def _signed(datatype: DataType, width: int) -> Converter:
    mask = (1 << width) - 1
    sign = 1 << (width - 1)
    full = 1 << width

    def convert(raw: object) -> int:
        if type(raw) is not int:
            raise _mismatch(datatype, raw)
        value = raw & mask
        return value - full if value >= sign else value

    return convert


def _unsigned(datatype: DataType, width: int) -> Converter:
    top = (1 << width) - 1

    def convert(raw: object) -> int:
        if type(raw) is not int:
            raise _mismatch(datatype, raw)
        if not 0 <= raw <= top:
            raise SparkplugDecodeError(f"{raw} is out of range for {datatype.name}")
        return raw

    return convert


def _exact(datatype: DataType, kind: type) -> Converter:
    def convert(raw: object) -> MetricValue:
        if type(raw) is not kind:
            raise _mismatch(datatype, raw)
        return raw  # type: ignore[return-value]  # checked just above

    return convert


_FLOAT32 = struct.Struct("<f")


def _float32(raw: object) -> float:
    """A Float value, rounded to 32 bits: a sender may put it in ``double_value``."""
    if type(raw) is not float:
        raise _mismatch(DataType.Float, raw)
    try:
        return float(_FLOAT32.unpack(_FLOAT32.pack(raw))[0])
    except OverflowError as exc:
        raise SparkplugDecodeError(f"{raw} is out of range for Float") from exc


def _array(datatype: DataType) -> Converter:
    def convert(raw: object) -> MetricValue:
        if type(raw) is not bytes:
            raise _mismatch(datatype, raw)
        return unpack_array(datatype, raw)

    return convert


def _refuse(datatype: DataType) -> Converter:
    def convert(raw: object) -> MetricValue:
        raise SparkplugDecodeError(f"{datatype.name} is not a valid datatype here")

    return convert


def _build_basic() -> dict[DataType, Converter]:
    table: dict[DataType, Converter] = {}
    for dt, width in SIGNED_WIDTH.items():
        table[dt] = _signed(dt, width)
    for dt, width in UNSIGNED_WIDTH.items():
        table[dt] = _unsigned(dt, width)
    table[DataType.DateTime] = _signed(DataType.DateTime, 64)
    table[DataType.Float] = _float32
    table[DataType.Double] = _exact(DataType.Double, float)
    table[DataType.Boolean] = _exact(DataType.Boolean, bool)
    for dt in (DataType.String, DataType.Text, DataType.UUID):
        table[dt] = _exact(dt, str)
    return table


#: datatype -> converter for DataSet cells and Template parameters
_BASIC: dict[DataType, Converter] = _build_basic()
#: ... for metric values
_METRIC: dict[DataType, Converter] = {
    **_BASIC,
    DataType.Bytes: _exact(DataType.Bytes, bytes),
    DataType.File: _exact(DataType.File, bytes),
    DataType.DataSet: _exact(DataType.DataSet, DataSet),
    DataType.Template: _exact(DataType.Template, Template),
    **{dt: _array(dt) for dt in ARRAY_TYPES},
    **{dt: _refuse(dt) for dt in (*_PROPERTY_ONLY_TYPES, DataType.Unknown)},
}
#: ... for property values
_PROPERTY: dict[DataType, Converter] = {
    **_BASIC,
    DataType.PropertySet: _exact(DataType.PropertySet, PropertySet),
    DataType.PropertySetList: _exact(DataType.PropertySetList, list),
}


def convert_wire_value(raw: object, datatype: DataType) -> MetricValue:
    """Type a raw wire value (a metric decoded without datatype) as ``datatype``.

    ``raw`` is what :attr:`Metric.value` holds for an untyped metric.  Raises
    :class:`SparkplugDecodeError` when the wire value cannot be that datatype.
    """
    if raw is None:
        return None
    convert = _METRIC.get(datatype)
    if convert is None:
        raise SparkplugDecodeError(f"unknown datatype {datatype!r}")
    return convert(raw)


# ---------------------------------------------------------------- protobuf -> objects


#: datatype by wire code; 0 (Unknown) means "not stated", like an absent field,
#: so reading the field without HasField gives the right answer either way
_STATED_TYPE: list[DataType | None] = [None, *(DataType(code) for code in range(1, len(DataType)))]
_MAX_CODE = len(_STATED_TYPE) - 1


def _datatype(code: int) -> DataType | None:
    if code > _MAX_CODE:
        raise SparkplugDecodeError(f"unknown datatype code {code}")
    return _STATED_TYPE[code]


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


def _decode_property_set(ps: pb.Payload.PropertySet, depth: int) -> PropertySet:
    if depth > MAX_NESTING:
        raise SparkplugDecodeError(f"PropertySet nesting deeper than {MAX_NESTING}")
    keys, values = ps.keys, ps.values
    if len(keys) != len(values):
        raise SparkplugDecodeError(f"PropertySet has {len(keys)} keys but {len(values)} values")
    items: dict[str, PropertyValue] = {}
    # every metric of a BIRTH carries properties: the scalar case is inlined
    for key, pv in zip(keys, values, strict=True):
        if type(key) is not str:
            raise SparkplugDecodeError("property key is not valid UTF-8")
        if key in items:
            raise SparkplugDecodeError(f"duplicate property key {key!r}")
        code = pv.type
        if code > _MAX_CODE:
            raise SparkplugDecodeError(f"unknown datatype code {code}")
        dt = _STATED_TYPE[code]
        kind = pv.WhichOneof("value")
        is_null = pv.is_null
        raw: object
        if is_null or kind is None:
            items[key] = PropertyValue(dt, None, is_null)
            continue
        if kind in _NESTED_PROPERTY_KINDS:
            raw = _decode_nested_property(pv, kind, depth)
        else:
            raw = getattr(pv, kind)
            if kind == "string_value" and type(raw) is not str:
                raise SparkplugDecodeError("string value is not valid UTF-8")  # upb gives bytes
        if dt is not None:
            convert = _PROPERTY.get(dt)
            if convert is None:
                raise SparkplugDecodeError(f"{dt.name} is not a property datatype")
            raw = convert(raw)
        items[key] = PropertyValue(dt, raw, False)  # type: ignore[arg-type]  # checked by the converter
    return PropertySet(items)


_NESTED_PROPERTY_KINDS = frozenset({"propertyset_value", "propertysets_value", "extension_value"})


def _decode_nested_property(pv: pb.Payload.PropertyValue, kind: str, depth: int) -> object:
    if kind == "propertyset_value":
        return _decode_property_set(pv.propertyset_value, depth + 1)
    if kind == "propertysets_value":
        return [_decode_property_set(ps, depth + 1) for ps in pv.propertysets_value.propertyset]
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
    convert = _BASIC.get(dt)
    if convert is None:
        raise SparkplugDecodeError(f"{dt.name} is not a basic type, not allowed in a {what}")
    return convert(raw)  # type: ignore[return-value]  # basic converters give scalars


def _decode_dataset(ds: pb.Payload.DataSet) -> DataSet:
    columns = [_text(c, "DataSet column name") for c in ds.columns]
    types: list[DataType] = []
    for code in ds.types:
        dt = _DATATYPE_BY_CODE.get(code)
        if dt is None or dt not in _BASIC_TYPES:
            raise SparkplugDecodeError(f"DataSet column type {code} is not a basic type")
        types.append(dt)
    width = len(columns)
    if len(types) != width:
        raise SparkplugDecodeError(f"DataSet has {width} columns but {len(types)} types")
    num = ds.num_of_columns if ds.HasField("num_of_columns") else None
    if num is not None and num != width:
        raise SparkplugDecodeError(f"DataSet num_of_columns {num} but {width} columns")
    converters = [_BASIC[dt] for dt in types]
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


def _decode_template(t: pb.Payload.Template, depth: int) -> Template:
    if depth > MAX_NESTING:
        raise SparkplugDecodeError(f"Template nesting deeper than {MAX_NESTING}")
    return Template(
        _optional_text(t, "version"),
        [_decode_metric(m, depth) for m in t.metrics],
        [_decode_parameter(p) for p in t.parameters],
        _optional_text(t, "template_ref"),
        t.is_definition if t.HasField("is_definition") else None,
    )


def _decode_metric(m: pb.Payload.Metric, depth: int) -> Metric:
    # hot path: plain field reads are cheaper than HasField, which is asked only
    # when a read gives the default (absent, or really "" / 0)
    name: str | None = m.name
    if type(name) is not str:
        raise SparkplugDecodeError("metric name is not valid UTF-8")
    if not name and not m.HasField("name"):
        name = None
    alias: int | None = m.alias
    if not alias and not m.HasField("alias"):
        alias = None
    timestamp: int | None = m.timestamp
    if not timestamp and not m.HasField("timestamp"):
        timestamp = None
    code = m.datatype
    if code > _MAX_CODE:
        raise SparkplugDecodeError(f"unknown datatype code {code}")
    dt = _STATED_TYPE[code]
    is_null = m.is_null
    kind = m.WhichOneof("value")
    value: MetricValue = None
    if kind is not None and not is_null:
        if kind == "template_value":
            value = _decode_template(m.template_value, depth + 1)
        elif kind == "dataset_value":
            value = _decode_dataset(m.dataset_value)
        elif kind == "extension_value":
            raise SparkplugDecodeError("metric extension values are not supported")
        else:
            value = getattr(m, kind)
            if kind == "string_value" and type(value) is not str:
                raise SparkplugDecodeError("string value is not valid UTF-8")  # upb gives bytes
        if dt is not None:
            value = _METRIC[dt](value)
    elif dt in _PROPERTY_ONLY_TYPES:
        raise SparkplugDecodeError(f"{dt.name} is not a valid metric datatype")
    return Metric(
        name,
        alias,
        timestamp,
        dt,
        m.is_historical,
        m.is_transient,
        is_null,
        _decode_metadata(m.metadata) if m.HasField("metadata") else None,
        _decode_property_set(m.properties, depth + 1) if m.HasField("properties") else None,
        value,
    )


def _parse_envelope(data: bytes) -> pb.Payload:
    """The one place protobuf's exceptions become :class:`SparkplugDecodeError`."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError, TypeError, ValueError) as exc:
        raise SparkplugDecodeError(f"not a Sparkplug B protobuf payload: {exc}") from exc
    return msg


def _metric_label(m: pb.Payload.Metric, index: int) -> str:
    if m.HasField("name") and type(m.name) is str:
        return f"metric {index} ({m.name!r})"
    if m.HasField("alias"):
        return f"metric {index} (alias {m.alias})"
    return f"metric {index}"


def _decode(data: bytes, *, lenient: bool) -> tuple[Payload, list[tuple[int, str]]]:
    msg = _parse_envelope(data)
    metrics: list[Metric] = []
    rejected: list[tuple[int, str]] = []
    for index, m in enumerate(msg.metrics):
        try:
            metrics.append(_decode_metric(m, 0))
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


def decode_payload(data: bytes) -> Payload:
    """Decode a Sparkplug B payload; any problem raises :class:`SparkplugDecodeError`."""
    return _decode(data, lenient=False)[0]


def decode_payload_lenient(data: bytes) -> tuple[Payload, list[tuple[int, str]]]:
    """Decode, keeping only the usable metrics: ``(payload, [(metric index, reason), ...])``.

    The envelope itself must parse, else :class:`SparkplugDecodeError`.
    """
    return _decode(data, lenient=True)


# ---------------------------------------------------------------- objects -> protobuf

_INT_FIELD_LIMIT = 1 << 32
_U64_LIMIT = 1 << 64


def _check_int(dt: DataType, value: object) -> int:
    if type(value) is not int:
        raise SparkplugEncodeError(f"{dt.name} value {value!r} is not an int")
    width = SIGNED_WIDTH.get(dt) or (64 if dt is DataType.DateTime else None)
    if width is not None:
        low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    else:
        low, high = 0, (1 << UNSIGNED_WIDTH[dt]) - 1
    if not low <= value <= high:
        raise SparkplugEncodeError(f"{value} is out of range for {dt.name}")
    return value & ((1 << (width or 64)) - 1)


def _basic_wire(dt: DataType, value: object) -> tuple[str, object]:
    """(oneof field name, wire value) for a basic-typed value."""
    if dt in SIGNED_WIDTH or dt in UNSIGNED_WIDTH or dt is DataType.DateTime:
        wire = _check_int(dt, value)
        big = dt in (DataType.Int64, DataType.UInt64, DataType.DateTime)
        return ("long_value" if big else "int_value"), wire
    if dt is DataType.Float or dt is DataType.Double:
        if type(value) not in (float, int):
            raise SparkplugEncodeError(f"{dt.name} value {value!r} is not a float")
        if dt is DataType.Double:
            return "double_value", float(value)  # type: ignore[arg-type]  # float or int
        try:
            _FLOAT32.pack(value)
        except OverflowError as exc:
            raise SparkplugEncodeError(f"{value} does not fit a 32-bit Float") from exc
        return "float_value", float(value)  # type: ignore[arg-type]  # float or int
    if dt is DataType.Boolean:
        if type(value) is not bool:
            raise SparkplugEncodeError(f"Boolean value {value!r} is not a bool")
        return "boolean_value", value
    if dt in (DataType.String, DataType.Text, DataType.UUID):
        if type(value) is not str:
            raise SparkplugEncodeError(f"{dt.name} value {value!r} is not a str")
        return "string_value", value
    raise SparkplugEncodeError(f"{dt.name} is not a basic type")


def _raw_wire(value: object) -> tuple[str, object]:
    """(oneof field name, wire value) for an untyped scalar, chosen by Python type."""
    if type(value) is bool:
        return "boolean_value", value
    if type(value) is int:
        if not 0 <= value < _U64_LIMIT:
            raise SparkplugEncodeError(f"untyped int {value} must be 0..2**64-1 (set a datatype)")
        return ("int_value" if value < _INT_FIELD_LIMIT else "long_value"), value
    if type(value) is float:
        return "double_value", value
    if type(value) is str:
        return "string_value", value
    raise SparkplugEncodeError(f"cannot encode untyped value of type {type(value).__name__}")


def _encode_scalar(dt: DataType | None, value: object, msg: object) -> None:
    field, wire = _raw_wire(value) if dt is None else _basic_wire(dt, value)
    setattr(msg, field, wire)


def _encode_metadata(md: MetaData, out: pb.Payload.MetaData) -> None:
    out.SetInParent()
    for field in MetaData.__slots__:
        value = getattr(md, field)
        if value is not None:
            setattr(out, field, value)


def _check_depth(depth: int, what: str) -> None:
    if depth > MAX_NESTING:
        # the decoder would refuse it, so never put it on the wire
        raise SparkplugEncodeError(f"{what} nesting deeper than {MAX_NESTING}")


def _encode_property_set(ps: PropertySet, out: pb.Payload.PropertySet, depth: int) -> None:
    _check_depth(depth, "PropertySet")
    out.SetInParent()
    for key, pv in ps.items.items():
        out.keys.append(key)
        _encode_property_value(pv, out.values.add(), depth)


def _encode_property_value(pv: PropertyValue, out: pb.Payload.PropertyValue, depth: int) -> None:
    dt, value = pv.type, pv.value
    if dt is not None:
        out.type = dt.value
    if pv.is_null:
        out.is_null = True
        return
    if value is None:
        return
    if dt is DataType.PropertySet or (dt is None and isinstance(value, PropertySet)):
        if not isinstance(value, PropertySet):
            raise SparkplugEncodeError(f"PropertySet value {value!r} is not a PropertySet")
        _encode_property_set(value, out.propertyset_value, depth + 1)
    elif dt is DataType.PropertySetList or (dt is None and isinstance(value, list)):
        if not isinstance(value, list) or not all(isinstance(v, PropertySet) for v in value):
            raise SparkplugEncodeError(f"PropertySetList value {value!r} is not a list of PropertySet")
        out.propertysets_value.SetInParent()
        for ps in value:
            _encode_property_set(ps, out.propertysets_value.propertyset.add(), depth + 1)
    else:
        _encode_scalar(dt, value, out)


def _encode_dataset(ds: DataSet, out: pb.Payload.DataSet) -> None:
    out.SetInParent()
    width = len(ds.columns)
    if len(ds.types) != width:
        raise SparkplugEncodeError(f"DataSet has {width} columns but {len(ds.types)} types")
    if ds.num_of_columns is not None:
        if ds.num_of_columns != width:
            raise SparkplugEncodeError(f"DataSet num_of_columns {ds.num_of_columns} but {width} columns")
        out.num_of_columns = width
    for dt in ds.types:
        if dt not in _BASIC_TYPES:
            raise SparkplugEncodeError(f"DataSet column type {dt!r} is not a basic type")
    out.columns.extend(ds.columns)
    out.types.extend(dt.value for dt in ds.types)
    for row in ds.rows:
        if len(row) != width:
            raise SparkplugEncodeError(f"DataSet row has {len(row)} cells, expected {width}")
        elements = out.rows.add().elements
        for dt, cell in zip(ds.types, row, strict=True):
            element = elements.add()
            if cell is not None:
                _encode_scalar(dt, cell, element)


def _encode_template(t: Template, out: pb.Payload.Template, depth: int) -> None:
    _check_depth(depth, "Template")
    out.SetInParent()
    if t.version is not None:
        out.version = t.version
    for metric in t.metrics:
        _encode_metric(metric, out.metrics.add(), depth)
    for param in t.parameters:
        p = out.parameters.add()
        if param.name is not None:
            p.name = param.name
        if param.type is not None:
            p.type = param.type.value
        if param.value is not None:
            _encode_scalar(param.type, param.value, p)
    if t.template_ref is not None:
        out.template_ref = t.template_ref
    if t.is_definition is not None:
        out.is_definition = t.is_definition


def _encode_metric_value(dt: DataType | None, value: object, out: pb.Payload.Metric, depth: int) -> None:
    if dt is DataType.DataSet or (dt is None and isinstance(value, DataSet)):
        if not isinstance(value, DataSet):
            raise SparkplugEncodeError(f"DataSet value {value!r} is not a DataSet")
        _encode_dataset(value, out.dataset_value)
    elif dt is DataType.Template or (dt is None and isinstance(value, Template)):
        if not isinstance(value, Template):
            raise SparkplugEncodeError(f"Template value {value!r} is not a Template")
        _encode_template(value, out.template_value, depth + 1)
    elif dt in ARRAY_TYPES:
        out.bytes_value = pack_array(dt, value)  # type: ignore[arg-type]  # dt is an array type
    elif dt in (DataType.Bytes, DataType.File) or (dt is None and type(value) is bytes):
        if type(value) is not bytes:
            raise SparkplugEncodeError(f"{dt!r} value {value!r} is not bytes")
        out.bytes_value = value
    else:
        _encode_scalar(dt, value, out)


def _encode_metric(metric: Metric, out: pb.Payload.Metric, depth: int) -> None:
    dt = metric.datatype
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = metric.alias
    if metric.timestamp is not None:
        out.timestamp = metric.timestamp
    if dt is not None:
        if dt is DataType.Unknown or dt in _PROPERTY_ONLY_TYPES:
            raise SparkplugEncodeError(f"{dt.name} is not a metric datatype (use None for untyped)")
        out.datatype = dt.value
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.is_null:
        out.is_null = True
    if metric.metadata is not None:
        _encode_metadata(metric.metadata, out.metadata)
    if metric.properties is not None:
        _encode_property_set(metric.properties, out.properties, depth + 1)
    if metric.value is not None and not metric.is_null:
        _encode_metric_value(dt, metric.value, out, depth)


def encode_payload(p: Payload) -> bytes:
    """Encode a payload; a value that does not fit its datatype raises :class:`SparkplugEncodeError`."""
    msg = pb.Payload()
    try:
        if p.timestamp is not None:
            msg.timestamp = p.timestamp
        for metric in p.metrics:
            _encode_metric(metric, msg.metrics.add(), 0)
        if p.seq is not None:
            msg.seq = p.seq
        if p.uuid is not None:
            msg.uuid = p.uuid
        if p.body is not None:
            msg.body = p.body
        return msg.SerializeToString()
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        # protobuf refuses a wrong Python type or an out-of-range field (name, alias, seq, ...)
        raise SparkplugEncodeError(f"cannot encode payload: {exc}") from exc
