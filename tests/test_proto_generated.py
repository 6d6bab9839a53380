"""The committed sparkplug_b_pb2 matches the schema, and the schema matches docs/sparkplug.md section 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from uns.sparkplug import sparkplug_b_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "uns" / "sparkplug"


def test_generated_module_is_what_gen_proto_produces(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        fresh = (tmp_path / name).read_bytes()
        assert fresh == (COMMITTED / name).read_bytes(), f"{name} is stale: run bash scripts/gen-proto"


P = pb.Payload.DESCRIPTOR
REPEATED = "repeated"

#: (message, field name, number, protobuf type, repeated) as in the docs/sparkplug.md table
FIELDS = [
    (P, "timestamp", 1, FieldDescriptor.TYPE_UINT64, False),
    (P, "metrics", 2, FieldDescriptor.TYPE_MESSAGE, True),
    (P, "seq", 3, FieldDescriptor.TYPE_UINT64, False),
    (P, "uuid", 4, FieldDescriptor.TYPE_STRING, False),
    (P, "body", 5, FieldDescriptor.TYPE_BYTES, False),
    *(
        (pb.Payload.Metric.DESCRIPTOR, name, number, ftype, False)
        for name, number, ftype in [
            ("name", 1, FieldDescriptor.TYPE_STRING),
            ("alias", 2, FieldDescriptor.TYPE_UINT64),
            ("timestamp", 3, FieldDescriptor.TYPE_UINT64),
            ("datatype", 4, FieldDescriptor.TYPE_UINT32),
            ("is_historical", 5, FieldDescriptor.TYPE_BOOL),
            ("is_transient", 6, FieldDescriptor.TYPE_BOOL),
            ("is_null", 7, FieldDescriptor.TYPE_BOOL),
            ("metadata", 8, FieldDescriptor.TYPE_MESSAGE),
            ("properties", 9, FieldDescriptor.TYPE_MESSAGE),
            ("int_value", 10, FieldDescriptor.TYPE_UINT32),
            ("long_value", 11, FieldDescriptor.TYPE_UINT64),
            ("float_value", 12, FieldDescriptor.TYPE_FLOAT),
            ("double_value", 13, FieldDescriptor.TYPE_DOUBLE),
            ("boolean_value", 14, FieldDescriptor.TYPE_BOOL),
            ("string_value", 15, FieldDescriptor.TYPE_STRING),
            ("bytes_value", 16, FieldDescriptor.TYPE_BYTES),
            ("dataset_value", 17, FieldDescriptor.TYPE_MESSAGE),
            ("template_value", 18, FieldDescriptor.TYPE_MESSAGE),
            ("extension_value", 19, FieldDescriptor.TYPE_MESSAGE),
        ]
    ),
    (pb.Payload.MetaData.DESCRIPTOR, "is_multi_part", 1, FieldDescriptor.TYPE_BOOL, False),
    (pb.Payload.MetaData.DESCRIPTOR, "size", 3, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.MetaData.DESCRIPTOR, "seq", 4, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.MetaData.DESCRIPTOR, "description", 8, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.PropertySet.DESCRIPTOR, "keys", 1, FieldDescriptor.TYPE_STRING, True),
    (pb.Payload.PropertySet.DESCRIPTOR, "values", 2, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.PropertyValue.DESCRIPTOR, "type", 1, FieldDescriptor.TYPE_UINT32, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "is_null", 2, FieldDescriptor.TYPE_BOOL, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "int_value", 3, FieldDescriptor.TYPE_UINT32, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "long_value", 4, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "string_value", 8, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "propertyset_value", 9, FieldDescriptor.TYPE_MESSAGE, False),
    (pb.Payload.PropertyValue.DESCRIPTOR, "propertysets_value", 10, FieldDescriptor.TYPE_MESSAGE, False),
    (pb.Payload.PropertySetList.DESCRIPTOR, "propertyset", 1, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.DataSet.DESCRIPTOR, "num_of_columns", 1, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.DataSet.DESCRIPTOR, "columns", 2, FieldDescriptor.TYPE_STRING, True),
    (pb.Payload.DataSet.DESCRIPTOR, "types", 3, FieldDescriptor.TYPE_UINT32, True),
    (pb.Payload.DataSet.DESCRIPTOR, "rows", 4, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.DataSet.Row.DESCRIPTOR, "elements", 1, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.DataSet.DataSetValue.DESCRIPTOR, "int_value", 1, FieldDescriptor.TYPE_UINT32, False),
    (pb.Payload.DataSet.DataSetValue.DESCRIPTOR, "long_value", 2, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.DataSet.DataSetValue.DESCRIPTOR, "string_value", 6, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.Template.DESCRIPTOR, "version", 1, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.Template.DESCRIPTOR, "metrics", 2, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.Template.DESCRIPTOR, "parameters", 3, FieldDescriptor.TYPE_MESSAGE, True),
    (pb.Payload.Template.DESCRIPTOR, "template_ref", 4, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.Template.DESCRIPTOR, "is_definition", 5, FieldDescriptor.TYPE_BOOL, False),
    (pb.Payload.Template.Parameter.DESCRIPTOR, "name", 1, FieldDescriptor.TYPE_STRING, False),
    (pb.Payload.Template.Parameter.DESCRIPTOR, "type", 2, FieldDescriptor.TYPE_UINT32, False),
    (pb.Payload.Template.Parameter.DESCRIPTOR, "long_value", 4, FieldDescriptor.TYPE_UINT64, False),
    (pb.Payload.Template.Parameter.DESCRIPTOR, "string_value", 8, FieldDescriptor.TYPE_STRING, False),
]


@pytest.mark.parametrize(
    ("message", "name", "number", "ftype", "repeated"),
    FIELDS,
    ids=[f"{m.name}.{n}" for m, n, *_ in FIELDS],
)
def test_field_numbers_match_the_spec_table(
    message: Descriptor, name: str, number: int, ftype: int, repeated: bool
) -> None:
    field = message.fields_by_name[name]
    assert field.number == number
    assert field.type == ftype
    assert field.is_repeated == repeated


def test_value_oneofs_and_extension_ranges() -> None:
    metric = pb.Payload.Metric.DESCRIPTOR
    assert [f.number for f in metric.oneofs_by_name["value"].fields] == list(range(10, 20))
    assert P.extension_ranges[0][0] == 6
    assert pb.Payload.MetaData.DESCRIPTOR.extension_ranges[0][0] == 9
    assert pb.Payload.DataSet.DESCRIPTOR.extension_ranges[0][0] == 5
    assert pb.Payload.Template.DESCRIPTOR.extension_ranges[0][0] == 6
    assert P.file.package == "org.eclipse.tahu.protobuf"
    # proto2: every optional scalar tracks presence, which the codec relies on (HasField)
    assert all(f.has_presence for f in metric.fields if not f.is_repeated)
