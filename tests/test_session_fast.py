"""SessionManager.handle_raw (with its fast DATA path) against the typed path as oracle.

The oracle is the engine's former decode block: ``decode_payload_lenient``,
the compression envelope unwrapped, then ``SessionManager.handle`` (or
``handle_undecodable``).  Two managers receive the same generated message
streams; every outcome, the bad-metric list, the stats and the node views
must be identical.  The DATA payloads are built at the protobuf level, so
they include what the typed model cannot express: explicit default flags,
values in another oneof field than the datatype's, unknown datatype codes,
invalid UTF-8, appended garbage.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import same
from uns.config import SparkplugSection
from uns.core.events import Sample
from uns.errors import SparkplugDecodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import decode_payload_lenient, encode_payload
from uns.sparkplug.compression import compress_payload, is_compressed, unwrap_compressed_lenient
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.fastdata import data_samples, parse_data
from uns.sparkplug.outcome import Outcome
from uns.sparkplug.payload import Metric, MetricValue, Payload
from uns.sparkplug.session import SessionManager
from uns.sparkplug.topic import Topic, parse_topic

T0 = 1_700_000_000_000
GROUP, NODE, DEVICE = "G", "N1", "D1"
D = DataType

#: (name, alias, datatype) of the NBIRTH and the DBIRTH
NODE_METRICS = [
    ("n_dbl", 1, D.Double),
    ("n_i32", 2, D.Int32),
    ("n_str", 3, D.String),
    ("Node Control/Rebirth", 4, D.Boolean),
    ("n_noalias", None, D.Int16),
]
DEVICE_METRICS = [
    ("d_flt", 10, D.Float),
    ("d_u8", 11, D.UInt8),
    ("d_i64", 12, D.Int64),
    ("d_bool", 13, D.Boolean),
    ("d_dt", 14, D.DateTime),
    ("d_txt", 15, D.Text),
    ("d_arr", 16, D.Int32Array),
    ("d_bytes", 17, D.Bytes),
    ("d_u64", 18, D.UInt64),
    ("d_i8", 19, D.Int8),
    ("d_u32", 20, D.UInt32),
    ("d_uuid", 21, D.UUID),
    ("d_dbl", 0, D.Double),  # alias 0 is an alias
    ("d_noalias", None, D.Double),
]
ALL = NODE_METRICS + DEVICE_METRICS
NAMES = [n for n, _, _ in ALL] + ["", "unborn", "bdSeq"]
ALIASES = [a for _, a, _ in ALL if a is not None] + [999]


def topic(kind: str, device: str | None = None) -> Topic:
    return parse_topic(f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else ""))


def birth(metrics: list[tuple[str, int | None, DataType]], seq: int, *, bdseq: bool) -> bytes:
    out = [Metric(name="bdSeq", datatype=D.Int64, value=7)] if bdseq else []
    samples: dict[DataType, MetricValue] = {
        D.Int32Array: [1, -2],
        D.Bytes: b"\x00\x01",
        D.String: "s",
        D.Text: "t",
        D.UUID: "u",
    }
    for name, alias, dt in metrics:
        value = samples.get(dt, True if dt is D.Boolean else 1.5 if dt in (D.Float, D.Double) else 3)
        out.append(Metric(name=name, alias=alias, datatype=dt, timestamp=T0, value=value))
    return encode_payload(Payload(timestamp=T0, metrics=out, seq=seq))


# ------------------------------------------------------------------ the oracle


def typed_handle_raw(
    mgr: SessionManager, t: Topic, raw: bytes, now: int
) -> tuple[Outcome, list[tuple[int, str]]]:
    """The engine's decode block before handle_raw existed."""
    try:
        decoded, bad = decode_payload_lenient(raw)
        if is_compressed(decoded):
            decoded, bad = unwrap_compressed_lenient(decoded, 1 << 20)
    except SparkplugDecodeError as exc:
        out = mgr.handle_undecodable(t, raw, exc.reason, now)
        out.undecodable = exc.reason
        return out, []
    return mgr.handle(t, decoded, raw, now), bad


# ------------------------------------------------------------------ generated DATA

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
VALUE_KINDS = {
    "int_value": u32 | st.sampled_from([0, 127, 128, 255, 256, 2**31, 2**32 - 1]),
    "long_value": u64 | st.sampled_from([0, 2**63, 2**64 - 1, T0]),
    "float_value": st.floats(width=32),
    "double_value": st.floats() | st.sampled_from([0.0, -0.0, math.nan, 1e300]),
    "boolean_value": st.booleans(),
    "string_value": st.text(max_size=5),
    "bytes_value": st.binary(max_size=9),
}
FLAGS = ("is_historical", "is_transient", "is_null")


#: a value each born scalar datatype accepts, in the field senders use for it
ORDINARY_VALUES: dict[DataType, tuple[str, st.SearchStrategy[object]]] = {
    D.Double: ("double_value", VALUE_KINDS["double_value"]),
    D.Float: ("float_value", VALUE_KINDS["float_value"]),
    D.Int32: ("int_value", st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1])),
    D.Int16: ("int_value", st.sampled_from([0, 5, 2**15, 2**16 - 1, 2**32 - 1])),
    D.Int8: ("int_value", st.sampled_from([0, 5, 127, 128, 255])),
    D.UInt8: ("int_value", st.integers(0, 255)),
    D.UInt32: ("int_value", u32),
    D.Int64: ("long_value", u64),
    D.UInt64: ("long_value", u64),
    D.DateTime: ("long_value", u64),
    D.Boolean: ("boolean_value", st.booleans()),
    D.String: ("string_value", st.text(max_size=4)),
    D.Text: ("string_value", st.text(max_size=4)),
    D.UUID: ("string_value", st.text(max_size=4)),
}


@st.composite
def ordinary_metric(draw: st.DrawFn, born: list[tuple[str, int | None, DataType]]) -> dict[str, object]:
    """What a well-behaved edge node sends: a born metric, its value, maybe its datatype."""
    name, alias, dt = draw(st.sampled_from([m for m in born if m[2] in ORDINARY_VALUES]))
    fields: dict[str, object] = {"alias": alias} if alias is not None else {"name": name}
    if alias is not None and draw(st.integers(0, 4)) == 0:
        fields["name"] = name
    if draw(st.booleans()):
        fields["datatype"] = int(dt)
    kind, values = ORDINARY_VALUES[dt]
    # integers: sometimes anything the wire field can carry (out of range for the type)
    fields[kind] = draw(values if kind not in ("int_value", "long_value") else values | VALUE_KINDS[kind])
    ts = draw(st.sampled_from([T0 + 5, T0 + 6, None, 0]))
    if ts is not None:
        fields["timestamp"] = ts
    return fields


@st.composite
def mismatched_metric(draw: st.DrawFn, born: list[tuple[str, int | None, DataType]]) -> dict[str, object]:
    """A born metric whose value is in any scalar field, or none, maybe with another datatype."""
    name, alias, dt = draw(st.sampled_from(born))
    fields: dict[str, object] = {"alias": alias} if alias is not None else {"name": name}
    code = draw(st.sampled_from([None, int(dt), *range(1, 16)]))
    if code is not None:
        fields["datatype"] = code
    kind = draw(st.sampled_from([None, *sorted(VALUE_KINDS)[:-1]]))  # all but bytes_value
    if kind is not None:
        fields[kind] = draw(VALUE_KINDS[kind])
    return fields


@st.composite
def pb_metric(draw: st.DrawFn, born: list[tuple[str, int | None, DataType]]) -> dict[str, object]:
    which = draw(st.integers(0, 14))
    if which < 10:
        return draw(ordinary_metric(born))
    if which < 13:
        return draw(mismatched_metric(born))
    fields: dict[str, object] = {}
    choice = draw(st.integers(0, 9))
    if choice < 7:  # mostly a born alias
        fields["alias"] = draw(st.sampled_from(ALIASES))
    if choice >= 5 or draw(st.integers(0, 5)) == 0:
        fields["name"] = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 2)) == 0:
        fields["datatype"] = draw(st.sampled_from([0, *range(1, 22), 22, 24, 33, 35, 40]))
    if draw(st.integers(0, 4)):
        kind = draw(st.sampled_from(sorted(VALUE_KINDS)))
        fields[kind] = draw(VALUE_KINDS[kind])
    ts = draw(st.sampled_from([None, 0, T0 + 5, None, T0 + 5]))
    if ts is not None:
        fields["timestamp"] = ts
    for flag in FLAGS:
        if draw(st.integers(0, 9)) == 0:
            fields[flag] = draw(st.booleans())
    return fields


@st.composite
def data_message(
    draw: st.DrawFn,
) -> tuple[str, str | None, dict[str, object], list[dict[str, object]], bytes]:
    kind = draw(st.sampled_from(["DDATA"] * 5 + ["NDATA"] * 4 + ["DDATA:D2"]))
    device = None if kind == "NDATA" else (DEVICE if kind == "DDATA" else "D2")
    envelope: dict[str, object] = {}
    seq_mode = draw(st.sampled_from(["next"] * 24 + ["skip", "again", "none", "big", "256", "zero"]))
    envelope["seq_mode"] = seq_mode
    ts = draw(st.sampled_from([T0 + 1, T0 + 1, None, 0]))
    if ts is not None:
        envelope["timestamp"] = ts
    if draw(st.integers(0, 29)) == 0:
        envelope["uuid"] = draw(st.sampled_from(["x", "SPBV1.0_COMPRESSED"]))
    if draw(st.integers(0, 29)) == 0:
        envelope["body"] = b"\x01"
    metrics = draw(st.lists(pb_metric(NODE_METRICS if device is None else DEVICE_METRICS), max_size=5))
    tail = draw(
        st.sampled_from(
            [
                *[b""] * 40,
                b"\x12\x05\x0a\x01\xff\x10\x0a",  # a metric with an invalid UTF-8 name (alias 10)
                b"\x12\x05\x10\x0a\x7a\x01\xfe",  # a metric with an invalid UTF-8 string value
                b"\x12\x04\x10\x0a\x38\x01",  # is_null, appended
                b"\x12\x03\x10\x0a\x42",  # truncated: undecodable
                b"\x12\x04\x10\x0a\xa0\x01",  # an unknown field (20) in a metric
                b"\x30\x01",  # a payload extension field (6): ignored by both
            ]
        )
    )
    return kind.split(":")[0], device, envelope, metrics, tail


def serialize(
    envelope: dict[str, object], metrics: list[dict[str, object]], seq: int | None, tail: bytes
) -> bytes:
    p = pb.Payload()
    if "timestamp" in envelope:
        p.timestamp = envelope["timestamp"]  # type: ignore[assignment]
    if seq is not None:
        p.seq = seq
    for key in ("uuid", "body"):
        if key in envelope:
            setattr(p, key, envelope[key])
    for fields in metrics:
        p.metrics.add(**fields)
    return p.SerializeToString() + tail


class Pair:
    """The manager under test and the oracle's, fed the same messages."""

    def __init__(self, config: SparkplugSection) -> None:
        self.fast = SessionManager(config)
        self.typed = SessionManager(config)
        self.now = T0
        self.seq = 0

    def feed(self, t: Topic, raw: bytes) -> Outcome:
        got, got_bad = self.fast.handle_raw(t, raw, self.now, max_decompressed_bytes=1 << 20)
        want, want_bad = typed_handle_raw(self.typed, t, raw, self.now)
        assert same(got, want), (raw, got, want)
        assert got_bad == want_bad
        assert self.fast.stats() == self.typed.stats()
        assert same(self.fast.nodes(), self.typed.nodes())
        return got

    def births(self) -> None:
        self.feed(topic("NBIRTH"), birth(NODE_METRICS, 0, bdseq=True))
        self.feed(topic("DBIRTH", DEVICE), birth(DEVICE_METRICS, 1, bdseq=False))
        self.seq = 1

    def next_seq(self, mode: str) -> int | None:
        if mode == "none":
            return None
        if mode == "again":
            return self.seq
        self.seq = (self.seq + (2 if mode == "skip" else 1)) & 255
        return {"big": self.seq + 256, "256": 256, "zero": 0}.get(mode, self.seq)


STREAM = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@STREAM
@given(
    st.lists(st.tuples(data_message(), st.integers(0, 2500), st.integers(0, 30)), min_size=1, max_size=12),
    st.sampled_from([2000, 0]),
)
def test_handle_raw_equals_the_typed_path_over_generated_streams(
    stream: list[tuple[tuple[str, str | None, dict[str, object], list[dict[str, object]], bytes], int, int]],
    reorder_timeout_ms: int,
) -> None:
    pair = Pair(SparkplugSection(reorder_timeout_ms=reorder_timeout_ms))
    pair.births()
    for (kind, device, envelope, metrics, tail), step, event in stream:
        pair.now += step
        if event == 0:  # sometimes the device is reborn, or the node dies and is reborn
            pair.seq = (pair.seq + 1) & 255
            pair.feed(topic("DBIRTH", DEVICE), birth(DEVICE_METRICS, pair.seq, bdseq=False))
        elif event == 1:
            pair.feed(
                topic("NDEATH"), encode_payload(Payload(metrics=[Metric("bdSeq", datatype=D.Int64, value=7)]))
            )
            pair.births()
        elif event == 3:  # the node goes offline until the next NDEATH event's births
            pair.feed(
                topic("NDEATH"), encode_payload(Payload(metrics=[Metric("bdSeq", datatype=D.Int64, value=7)]))
            )
        elif event == 4:
            pair.seq = (pair.seq + 1) & 255
            pair.feed(topic("DDEATH", DEVICE), encode_payload(Payload(seq=pair.seq)))
        elif event == 2:
            pair.feed(topic(kind, device), bytes([0x0A, 0xFF]))  # garbage
        seq = pair.next_seq(str(envelope["seq_mode"]))
        pair.feed(topic(kind, device), serialize(envelope, metrics, seq, tail))


def test_ordinary_data_gives_the_typed_samples_without_fallback_differences() -> None:
    pair = Pair(SparkplugSection())
    pair.births()
    p = pb.Payload(timestamp=T0 + 1, seq=2)
    p.metrics.add(alias=10, timestamp=T0 + 2, float_value=0.5)
    p.metrics.add(alias=12, long_value=2**64 - 1)  # Int64 -1, sign-corrected by the converter
    p.metrics.add(alias=13, boolean_value=False)  # falsy: found by asking which field is set
    p.metrics.add(alias=0, datatype=int(D.Double), double_value=1.25)  # Tahu style: datatype stated
    p.metrics.add(name="d_noalias", double_value=-0.0)
    out = pair.feed(topic("DDATA", DEVICE), p.SerializeToString())
    got = [(s.metric, s.datatype, s.value, s.ts, s.alias) for s in out.batch.samples]
    assert got == [
        ("d_flt", D.Float, 0.5, T0 + 2, 10),
        ("d_i64", D.Int64, -1, T0 + 1, 12),
        ("d_bool", D.Boolean, False, T0 + 1, 13),
        ("d_dbl", D.Double, 1.25, T0 + 1, 0),
        ("d_noalias", D.Double, -0.0, T0 + 1, None),
    ]
    assert math.copysign(1.0, out.batch.samples[-1].value) == -1.0  # type: ignore[arg-type]
    assert all(type(s) is Sample for s in out.batch.samples)


def test_handle_raw_unwraps_compression_and_reports_undecodable_bytes() -> None:
    pair = Pair(SparkplugSection())
    pair.births()
    inner = Payload(timestamp=T0, seq=2, metrics=[Metric(alias=11, value=5)])
    out = pair.feed(topic("DDATA", DEVICE), encode_payload(compress_payload(inner, "GZIP")))
    assert [(s.metric, s.value) for s in out.batch.samples] == [("d_u8", 5)]
    bad = pair.feed(topic("DDATA", DEVICE), b"\x12\x03\x10\x0a\x42")
    assert bad.undecodable is not None and "not a Sparkplug B protobuf payload" in bad.undecodable
    assert bad.batch.rejected and bad.rebirths


def test_bad_metrics_are_returned_for_the_caller_to_record() -> None:
    pair = Pair(SparkplugSection())
    pair.births()
    p = pb.Payload(timestamp=T0, seq=2)
    p.metrics.add(alias=11, int_value=5)
    raw = p.SerializeToString() + b"\x12\x05\x0a\x01\xff\x10\x0a"  # second metric: invalid UTF-8 name
    out, bad = pair.fast.handle_raw(topic("DDATA", DEVICE), raw, pair.now)
    assert [s.value for s in out.batch.samples] == [5]
    assert bad == [(1, "metric 1 (alias 10): metric name is not valid UTF-8")]


def test_parse_data_answers_only_for_ordinary_payloads() -> None:
    plain = pb.Payload(timestamp=1, seq=3)
    plain.metrics.add(alias=1, timestamp=2, datatype=10, double_value=1.0)
    plain.metrics.add(name="x", string_value="ok")
    assert parse_data(plain.SerializeToString()) is not None
    for unusual in ({"uuid": "u"}, {"body": b"b"}):
        p = pb.Payload(**unusual)
        assert parse_data(p.SerializeToString()) is None
    assert parse_data(b"\x12\x05\x0a\x01\xff\x10\x0a") is None  # invalid UTF-8: protobuf refuses it here
    assert parse_data(b"\x12\x03\x10\x0a\x42") is None  # truncated


def test_data_samples_refuses_what_the_typed_path_treats_specially() -> None:
    mgr = SessionManager(SparkplugSection())
    mgr.handle_raw(topic("NBIRTH"), birth(NODE_METRICS, 0, bdseq=True), T0)
    own = mgr._nodes[(GROUP, NODE)].own

    def samples(**fields: object) -> list[Sample] | None:
        p = pb.Payload(seq=1)
        p.metrics.add(**fields)
        lean = parse_data(p.SerializeToString())
        assert lean is not None
        return data_samples(lean.metrics, own.by_alias, own.by_name, GROUP, NODE, None, T0, T0, 1, 7)

    assert samples(alias=1, double_value=2.0) is not None
    assert samples(alias=4, boolean_value=True) == []  # Node Control: no sample
    for refused in (
        {"alias": 999, "double_value": 1.0},  # unknown alias
        {"name": "unborn", "double_value": 1.0},
        {"alias": 2, "string_value": "x"},  # not an Int32
        {"alias": 1, "datatype": 40, "double_value": 1.0},  # unknown datatype code
        {"alias": 1, "datatype": 20},  # PropertySet is no metric datatype
        {"alias": 1, "is_null": True},
        {"alias": 1, "is_historical": False},
        {"alias": 1, "bytes_value": b"x"},
    ):
        assert samples(**refused) is None, refused


def test_every_scalar_type_with_boundary_values_matches_the_typed_path() -> None:
    """A sweep over the born scalar types: each boundary value of its wire field, with
    and without the datatype stated (the fast path passes some values through as they are)."""
    pair = Pair(SparkplugSection())
    pair.births()
    boundaries: dict[str, list[object]] = {
        "int_value": [0, 1, 127, 128, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, 2**32 - 1],
        "long_value": [0, 1, 255, 256, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1],
        "float_value": [0.0, -0.0, 1.5, math.inf, math.nan],
        "double_value": [0.0, -0.0, 0.1, 1e300, -math.inf, math.nan],
        "boolean_value": [False, True],
        "string_value": ["", "x"],
    }
    for name, alias, dt in DEVICE_METRICS:
        if dt not in ORDINARY_VALUES:
            continue
        for kind, values in boundaries.items():
            for value in values:
                for stated in (None, int(dt)):
                    p = pb.Payload(timestamp=T0, seq=pair.next_seq("next"))
                    fields: dict[str, object] = {"alias": alias} if alias is not None else {"name": name}
                    fields[kind] = value
                    if stated is not None:
                        fields["datatype"] = stated
                    p.metrics.add(**fields)
                    pair.feed(topic("DDATA", DEVICE), p.SerializeToString())
