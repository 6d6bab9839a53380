"""Hypothesis strategies for Sparkplug B payload objects, and a NaN-aware comparison.

Reusable by any test that needs payloads::

    from tests.strategies import payloads, metrics, metric_values, same

    @given(payloads())
    def test_x(p): ...

Everything generated is encodable and survives ``decode(encode(p)) == p``
(compare with :func:`same`, which treats NaN as equal to NaN and tells
``True`` from ``1``).  Float (32-bit) values are float32-representable.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from hypothesis import strategies as st

from uns import sparkplug as sp
from uns.sparkplug import payload as convert
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, UNSIGNED_WIDTH, DataType

__all__ = [
    "BASIC_TYPES",
    "METRIC_TYPES",
    "basic_values",
    "canonical",
    "datasets",
    "metadata",
    "metric_values",
    "metrics",
    "payloads",
    "property_sets",
    "same",
    "templates",
]

BASIC_TYPES: tuple[DataType, ...] = tuple(sorted(convert.BASIC_TYPES))
#: every datatype a metric may declare
METRIC_TYPES: tuple[DataType, ...] = tuple(
    dt for dt in DataType if dt not in (DataType.Unknown, DataType.PropertySet, DataType.PropertySetList)
)
MAX_DEPTH = 2  # nesting of templates / property sets generated (decoder allows 32)

names = st.text(st.characters(codec="utf-8"), max_size=12)
u64 = st.integers(0, 2**64 - 1)
texts = st.text(st.characters(codec="utf-8"), max_size=20)


def _int_values(dt: DataType) -> st.SearchStrategy[int]:
    if dt in SIGNED_WIDTH:
        half = 1 << (SIGNED_WIDTH[dt] - 1)
        return st.integers(-half, half - 1)
    if dt is DataType.DateTime:
        return st.integers(-(2**63), 2**63 - 1)
    return st.integers(0, (1 << UNSIGNED_WIDTH[dt]) - 1)


@functools.cache
def basic_values(dt: DataType) -> st.SearchStrategy[Any]:
    """Values of a basic datatype (DataSet cells, parameters, properties, metrics)."""
    if dt in SIGNED_WIDTH or dt in UNSIGNED_WIDTH or dt is DataType.DateTime:
        return _int_values(dt)
    if dt is DataType.Float:
        return st.floats(width=32)
    if dt is DataType.Double:
        return st.floats()
    if dt is DataType.Boolean:
        return st.booleans()
    if dt in (DataType.String, DataType.Text, DataType.UUID):
        return texts
    raise ValueError(f"{dt.name} is not basic")


#: values a metric/parameter/property without datatype may hold after decoding
raw_scalars = st.one_of(u64, st.floats(), st.booleans(), texts)

_ARRAY_ELEMENT: dict[DataType, DataType] = {
    DataType.Int8Array: DataType.Int8,
    DataType.Int16Array: DataType.Int16,
    DataType.Int32Array: DataType.Int32,
    DataType.Int64Array: DataType.Int64,
    DataType.UInt8Array: DataType.UInt8,
    DataType.UInt16Array: DataType.UInt16,
    DataType.UInt32Array: DataType.UInt32,
    DataType.UInt64Array: DataType.UInt64,
    DataType.FloatArray: DataType.Float,
    DataType.DoubleArray: DataType.Double,
    DataType.BooleanArray: DataType.Boolean,
    DataType.DateTimeArray: DataType.DateTime,
}


def array_values(dt: DataType) -> st.SearchStrategy[list[Any]]:
    if dt is DataType.StringArray:
        no_nul = st.characters(codec="utf-8", exclude_characters="\x00")
        return st.lists(st.text(no_nul, max_size=8), max_size=6)
    return st.lists(basic_values(_ARRAY_ELEMENT[dt]), max_size=20)


@st.composite
def datasets(draw: st.DrawFn) -> sp.DataSet:
    types = draw(st.lists(st.sampled_from(BASIC_TYPES), max_size=4))
    columns = draw(st.lists(names, min_size=len(types), max_size=len(types)))
    cell = [st.none() | basic_values(dt) for dt in types]
    rows = draw(st.lists(st.tuples(*cell).map(list), max_size=4))
    num = draw(st.sampled_from([None, len(columns)]))
    return sp.DataSet(columns, types, rows, num)


@functools.cache
def property_sets(depth: int = 1) -> st.SearchStrategy[sp.PropertySet]:
    typed = st.sampled_from(BASIC_TYPES).flatmap(
        lambda dt: st.builds(sp.PropertyValue, st.just(dt), basic_values(dt))
    )
    options = [
        typed,
        st.builds(sp.PropertyValue, st.none(), raw_scalars),
        st.builds(sp.PropertyValue, st.sampled_from([None, *BASIC_TYPES]), st.none(), st.booleans()),
    ]
    if depth < MAX_DEPTH:
        inner = property_sets(depth + 1)
        set_type = st.sampled_from([None, DataType.PropertySet])
        list_type = st.sampled_from([None, DataType.PropertySetList])
        options += [
            st.builds(sp.PropertyValue, set_type, inner),
            st.builds(sp.PropertyValue, list_type, st.lists(inner, max_size=2)),
        ]
    values = st.one_of(options)
    return st.dictionaries(names, values, max_size=3).map(sp.PropertySet)


metadata = st.builds(
    sp.MetaData,
    *(st.none() | s for s in (st.booleans(), texts, u64, u64, texts, texts, texts, texts)),
)


@functools.cache
def parameters() -> st.SearchStrategy[sp.Parameter]:
    typed = st.sampled_from(BASIC_TYPES).flatmap(
        lambda dt: st.builds(sp.Parameter, st.none() | names, st.just(dt), st.none() | basic_values(dt))
    )
    return typed | st.builds(sp.Parameter, st.none() | names, st.none(), st.none() | raw_scalars)


@functools.cache
def templates(depth: int = 1) -> st.SearchStrategy[sp.Template]:
    return st.builds(
        sp.Template,
        st.none() | texts,
        st.lists(metrics(depth), max_size=3),
        st.lists(parameters(), max_size=3),
        st.none() | names,
        st.none() | st.booleans(),
    )


@functools.cache
def metric_values(dt: DataType, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid for a metric of datatype ``dt``."""
    if dt in ARRAY_TYPES:
        return array_values(dt)
    if dt in (DataType.Bytes, DataType.File):
        return st.binary(max_size=32)
    if dt is DataType.DataSet:
        return datasets()
    if dt is DataType.Template:
        return templates(depth + 1) if depth < MAX_DEPTH else st.builds(sp.Template)
    return basic_values(dt)


def _untyped_values(depth: int) -> st.SearchStrategy[Any]:
    nested = templates(depth + 1) if depth < MAX_DEPTH else st.builds(sp.Template)
    return st.one_of(raw_scalars, st.binary(max_size=16), datasets(), nested)


@functools.cache
def metrics(depth: int = 0, typed: bool | None = None) -> st.SearchStrategy[sp.Metric]:
    """Metrics of every datatype (``typed=False``: no datatype, raw values as in DATA)."""

    @st.composite
    def build(draw: st.DrawFn) -> sp.Metric:
        is_typed = draw(st.booleans()) if typed is None else typed
        dt = draw(st.sampled_from(METRIC_TYPES)) if is_typed else None
        is_null = draw(st.booleans())
        if is_null:
            value = None
        else:
            values = metric_values(dt, depth) if dt is not None else _untyped_values(depth)
            value = draw(st.none() | values) if draw(st.integers(0, 9)) == 0 else draw(values)
        return sp.Metric(
            name=draw(st.none() | names),
            alias=draw(st.none() | u64),
            timestamp=draw(st.none() | u64),
            datatype=dt,
            is_historical=draw(st.booleans()),
            is_transient=draw(st.booleans()),
            is_null=is_null,
            metadata=draw(st.none() | metadata) if depth == 0 else None,
            properties=draw(st.none() | property_sets()) if depth == 0 else None,
            value=value,
        )

    return build()


def payloads(
    max_metrics: int = 6, metric: st.SearchStrategy[sp.Metric] | None = None
) -> st.SearchStrategy[sp.Payload]:
    """Whole payloads; pass ``metric`` to draw the metrics from another strategy."""
    return st.builds(
        sp.Payload,
        st.none() | u64,
        st.lists(metric if metric is not None else metrics(), max_size=max_metrics),
        st.none() | u64,
        st.none() | texts,
        st.none() | st.binary(max_size=16),
    )


# ---------------------------------------------------------------- comparison


def canonical(obj: object) -> object:
    """A comparable form: NaN equals NaN, bool/int/float stay distinct, -0.0 != 0.0."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__, *(canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
    if isinstance(obj, float):
        return ("float", "nan" if math.isnan(obj) else obj, math.copysign(1.0, obj))
    if isinstance(obj, list | tuple):
        return ("list", *(canonical(x) for x in obj))
    if isinstance(obj, dict):
        return ("dict", *((k, canonical(v)) for k, v in obj.items()))
    return (type(obj).__name__, obj)


def same(a: object, b: object) -> bool:
    """Equality for decoded payloads (NaN-aware, type-strict)."""
    return canonical(a) == canonical(b)
