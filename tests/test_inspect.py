"""What `uns topics` and `uns watch` show: the topic tree fed with real Sparkplug payloads and
UNS events (no broker needed: TopicTree is fed bytes as the broker delivers them)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from uns.client.display import float32_text, iso_ms, shown, uns_event_text
from uns.client.inspect import TopicTree
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload

T = 1_764_064_800_123  # 2025-11-25T10:00:00.123Z


def feed(tree: TopicTree, topic: str, seq: int | None, *metrics: Metric) -> str:
    tree.feed(topic, encode_payload(Payload(timestamp=T, seq=seq, metrics=list(metrics))), T)
    return tree.render()


def born_node(tree: TopicTree) -> None:
    feed(tree, "spBv1.0/G/NBIRTH/N1", 0, Metric(name="bdSeq", datatype=DataType.Int64, value=0))
    feed(
        tree,
        "spBv1.0/G/DBIRTH/N1/D1",
        1,
        Metric(name="Level", alias=1, datatype=DataType.Float, value=9.699999809265137, timestamp=T),
        Metric(name="CleanedAt", alias=2, datatype=DataType.DateTime, value=T, timestamp=T),
    )


def test_a_node_that_sends_data_is_online_before_its_birth_is_seen() -> None:
    tree = TopicTree()
    text = feed(tree, "spBv1.0/G/DDATA/N9/D1", 7, Metric(alias=3, value=1.5, datatype=DataType.Double))
    assert "  N9  [online; birth not seen yet (names unknown; `--rebirth` asks for one)]" in text
    assert "    D1  [online]" in text
    node = tree.as_json()["sparkplug"]["G"]["N9"]
    assert (node["online"], node["birth_seen"]) == (True, False)
    # its death takes it offline, birth still not seen
    text = feed(tree, "spBv1.0/G/NDEATH/N9", None, Metric(name="bdSeq", datatype=DataType.Int64, value=0))
    assert "  N9  [offline; birth not seen yet" in text


def test_float32_and_datetime_are_shown_as_meant() -> None:
    tree = TopicTree()
    born_node(tree)
    text = tree.render()
    assert "  N1  [online]" in text
    assert "      Level = 9.7  <Float>" in text
    assert "      CleanedAt = 2025-11-25T10:00:00.123Z  <DateTime>" in text
    assert "9.699999809265137" not in text
    # a watch line too
    payload = Payload(timestamp=T, seq=2, metrics=[Metric(alias=1, value=0.1, timestamp=T)])
    line = tree.feed("spBv1.0/G/DDATA/N1/D1", encode_payload(payload), T).as_line()
    assert line.endswith("seq=2  Level=0.1"), line
    # --json keeps the decoded value exact, with its datatype
    metric = tree.as_json()["sparkplug"]["G"]["N1"]["devices"]["D1"]["metrics"]["CleanedAt"]
    assert (metric["value"], metric["datatype"]) == (T, "DateTime")


def test_a_uns_event_line_starts_with_its_value() -> None:
    tree = TopicTree()
    path = "acme/basel/pilot/downstream/chromatography/skid-7/column-3/uv-detector-2"
    event = {
        "ts": T,
        "path": path,
        "metric": "Absorbance280",
        "value": 0.30000001192092896,
        "datatype": "Float",
        "unit": "AU",
        "quality": "good",
        "historical": False,
        "source": {"group": "G", "node": "N1", "device": "D1", "seq": 3, "bdseq": 0},
        "context": {"batch_id": "B2026-0042", "phase": "elution"},
    }
    tree.feed(f"uns/v1/{path}/Absorbance280", json.dumps(event).encode(), T)
    line = next(x for x in tree.render().splitlines() if "Absorbance280" in x)
    assert line.endswith("/Absorbance280 = 0.3 AU  (batch_id=B2026-0042, phase=elution)"), line
    device_event = {"ts": T, "path": path, "context": {}, "metrics": [
        {"metric": "A", "value": 1.25, "datatype": "Double", "unit": None, "quality": "uncertain"},
        {"metric": "B", "value": T, "datatype": "DateTime", "unit": None, "quality": "good"},
    ]}  # fmt: skip
    assert uns_event_text(device_event) == "A=1.25 (uncertain)  B=2025-11-25T10:00:00.123Z"
    assert uns_event_text({"messages": 12}) is None  # an engine status: shown as JSON


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_text_is_the_shortest_text_that_reads_back(x: float) -> None:
    text = float32_text(x)
    assert struct.unpack("<f", struct.pack("<f", float(text)))[0] == x
    # numpy's shortest-unique rendering of the float32 is the oracle: the same number
    assert float(text) == float(np.format_float_scientific(np.float32(x), unique=True))


def test_display_edge_cases() -> None:
    assert float32_text(math.inf) == "inf"
    assert float32_text(3.4025001647762064e38) == "3.4025002e+38"  # 3.403e+38 is beyond float32
    largest = float(np.finfo(np.float32).max)
    assert float(float32_text(largest)) == float(str(np.float32(largest)))
    assert shown(None) == "null"
    assert shown("x" * 100).endswith("...")
    assert shown([0.1, 9.699999809265137], "FloatArray") == "[0.1, 9.7]"
    assert iso_ms(10**20) == str(10**20)  # beyond a calendar: the number
