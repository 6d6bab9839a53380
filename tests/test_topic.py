"""Sparkplug topic parsing: every form, str() round trip, clear errors for the rest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.errors import SparkplugTopicError
from uns.sparkplug import MessageType, Topic, parse_topic

M = MessageType
NODE_TYPES = [M.NBIRTH, M.NDEATH, M.NDATA, M.NCMD]
DEVICE_TYPES = [M.DBIRTH, M.DDEATH, M.DDATA, M.DCMD]


@pytest.mark.parametrize("mtype", NODE_TYPES, ids=lambda m: m.value)
def test_node_message_topics(mtype: MessageType) -> None:
    topic = parse_topic(f"spBv1.0/Plant1/{mtype.value}/Line3")
    assert topic == Topic(mtype, "Plant1", "Line3")
    assert topic.device_id is None
    assert topic.host_id is None
    assert not topic.legacy
    assert not mtype.is_device
    assert topic.node_key == ("Plant1", "Line3")


@pytest.mark.parametrize("mtype", DEVICE_TYPES, ids=lambda m: m.value)
def test_device_message_topics(mtype: MessageType) -> None:
    topic = parse_topic(f"spBv1.0/Plant1/{mtype.value}/Line3/Filler")
    assert topic == Topic(mtype, "Plant1", "Line3", "Filler")
    assert mtype.is_device
    assert topic.node_key == ("Plant1", "Line3")


def test_state_topics_3_0_and_legacy() -> None:
    assert parse_topic("spBv1.0/STATE/scada-1") == Topic(M.STATE, host_id="scada-1")
    legacy = parse_topic("STATE/scada-1")
    assert legacy == Topic(M.STATE, host_id="scada-1", legacy=True)
    assert str(legacy) == "STATE/scada-1"
    assert not M.STATE.is_device


def test_ids_are_case_sensitive_and_may_hold_unicode_and_spaces() -> None:
    topic = parse_topic("spBv1.0/Gruppe Ä/DDATA/node/Gerät 1")
    assert (topic.group_id, topic.edge_node_id, topic.device_id) == ("Gruppe Ä", "node", "Gerät 1")
    assert parse_topic("spBv1.0/g/NDATA/N") != parse_topic("spBv1.0/g/NDATA/n")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "namespace"),
        ("spBv1.0", "expected 4 or 5 levels"),
        ("spBv1.0/g/NDATA", "expected 4 or 5 levels"),
        ("spBv1.0/g/DDATA/n/d/x", "expected 4 or 5 levels"),
        ("spAv1.0/g/NDATA/n", "namespace"),
        ("spbv1.0/g/NDATA/n", "namespace"),
        ("/spBv1.0/g/NDATA/n", "namespace"),
        ("spBv1.0/g/NFOO/n", "unknown message type"),
        ("spBv1.0/g/ndata/n", "unknown message type"),
        ("spBv1.0/g/STATE/n", "unknown message type"),
        ("spBv1.0/g/NDATA/n/d", "takes no device id"),
        ("spBv1.0/g/DDATA/n", "needs a device id"),
        ("spBv1.0//NDATA/n", "empty group id"),
        ("spBv1.0/g/NDATA/", "empty edge node id"),
        ("spBv1.0/g/DDATA/n/", "empty device id"),
        ("spBv1.0/g+/NDATA/n", "wildcard"),
        ("spBv1.0/g/NDATA/#", "wildcard"),
        ("spBv1.0/g/DDATA/n/+", "wildcard"),
        ("spBv1.0/STATE", "STATE topic must be"),
        ("spBv1.0/STATE/h/x", "STATE topic must be"),
        ("spBv1.0/STATE/", "empty host id"),
        ("spBv1.0/STATE/#", "wildcard"),
        ("STATE", "legacy STATE"),
        ("STATE/h/x", "legacy STATE"),
        ("STATE/", "empty host id"),
    ],
)
def test_bad_topics_raise_topic_error_with_reason(topic: str, reason: str) -> None:
    with pytest.raises(SparkplugTopicError, match=reason) as info:
        parse_topic(topic)
    assert info.value.topic == topic
    assert reason in info.value.reason


ids = st.text(
    st.characters(codec="utf-8", exclude_characters="/+#", exclude_categories=["Cs"]), min_size=1, max_size=16
)


@st.composite
def topics(draw: st.DrawFn) -> Topic:
    mtype = draw(st.sampled_from(list(MessageType)))
    if mtype is M.STATE:
        return Topic(mtype, host_id=draw(ids), legacy=draw(st.booleans()))
    device = draw(ids) if mtype.is_device else None
    return Topic(mtype, draw(ids), draw(ids), device)


@settings(max_examples=300, deadline=None)
@given(topics())
def test_str_round_trip(topic: Topic) -> None:
    assert parse_topic(str(topic)) == topic
    assert str(parse_topic(str(topic))) == str(topic)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["spBv1.0", "STATE", "NDATA", "DCMD", "g", "", "+", "#", "a/b"]), max_size=6))
def test_any_topic_parses_to_itself_or_raises_topic_error(levels: list[str]) -> None:
    text = "/".join(levels)
    try:
        topic = parse_topic(text)
    except SparkplugTopicError:
        return
    assert str(topic) == text
