"""Sparkplug B payload encoding: :mod:`uns.sparkplug.payload` objects -> protobuf bytes.

Encoding is canonical (the wire conventions are in :mod:`uns.sparkplug.codec`,
which re-exports :func:`encode_payload`): what decodes re-encodes unchanged, and
nothing the decoder would refuse is put on the wire.  A value that does not fit
its datatype raises :class:`SparkplugEncodeError`.
"""

from __future__ import annotations

from uns.errors import SparkplugEncodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.arrays import pack_array
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
from uns.sparkplug.payload import (
    BASIC_TYPES,
    FLOAT32,
    MAX_NESTING,
    PROPERTY_ONLY_TYPES,
    DataSet,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
)

__all__ = ["encode_payload"]

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
            FLOAT32.pack(value)
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
        if dt not in BASIC_TYPES:
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


#: the payload's optional fields, copied as they are when set (None: absent from the wire)
_PAYLOAD_FIELDS = ("timestamp", "seq", "uuid", "body")


def _copy_present(src: Payload, out: pb.Payload, fields: tuple[str, ...]) -> None:
    for field in fields:
        value = getattr(src, field)
        if value is not None:
            setattr(out, field, value)


def _encode_metric(metric: Metric, out: pb.Payload.Metric, depth: int) -> None:
    dt = metric.datatype  # field by field, not through _copy_present: this runs once per metric
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = metric.alias
    if metric.timestamp is not None:
        out.timestamp = metric.timestamp
    if dt is not None:
        if dt is DataType.Unknown or dt in PROPERTY_ONLY_TYPES:
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
        _copy_present(p, msg, _PAYLOAD_FIELDS)
        for metric in p.metrics:
            _encode_metric(metric, msg.metrics.add(), 0)
        return msg.SerializeToString()
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        # protobuf refuses a wrong Python type or an out-of-range field (name, alias, seq, ...)
        raise SparkplugEncodeError(f"cannot encode payload: {exc}") from exc
