"""Host STATE payloads: 3.0 JSON, legacy ONLINE/OFFLINE, and everything else refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.errors import SparkplugStateError
from uns.sparkplug import HostState, format_state, parse_state


def test_3_0_json_online_and_offline() -> None:
    assert parse_state(b'{"online": true, "timestamp": 1700000000000}') == HostState(True, 1700000000000)
    assert parse_state(b'{"timestamp":5,"online":false}') == HostState(False, 5, legacy=False)


def test_extra_keys_are_ignored() -> None:
    assert parse_state(b'{"online":true,"timestamp":1,"bdSeq":3}') == HostState(True, 1)


@pytest.mark.parametrize(("data", "online"), [(b"ONLINE", True), (b"OFFLINE", False), (b"OFFLINE\n", False)])
def test_legacy_words(data: bytes, online: bool) -> None:
    assert parse_state(data) == HostState(online, None, legacy=True)


def test_format_is_compact_json() -> None:
    assert format_state(True, 1700000000000) == b'{"online":true,"timestamp":1700000000000}'
    assert format_state(False, 0) == b'{"online":false,"timestamp":0}'


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.integers(0, 2**64 - 1))
def test_format_then_parse_round_trip(online: bool, timestamp: int) -> None:
    assert parse_state(format_state(online, timestamp)) == HostState(online, timestamp, legacy=False)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"online", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[true, 1]", "not an object"),
        (b"null", "not an object"),
        (b'{"online": "true", "timestamp": 1}', "'online' must be a JSON boolean"),
        (b'{"online": 1, "timestamp": 1}', "'online' must be a JSON boolean"),
        (b'{"timestamp": 1}', "'online' must be a JSON boolean"),
        (b'{"online": true}', "'timestamp' must be a JSON integer"),
        (b'{"online": true, "timestamp": true}', "'timestamp' must be a JSON integer"),  # bools are not ints
        (b'{"online": true, "timestamp": 1.5}', "'timestamp' must be a JSON integer"),
        (b'{"online": true, "timestamp": 1e12}', "'timestamp' must be a JSON integer"),
        (b'{"online": true, "timestamp": "1"}', "'timestamp' must be a JSON integer"),
        (b'{"online": true, "timestamp": NaN}', "'timestamp' must be a JSON integer"),
        (b'{"online": true, "timestamp": -1}', "not a ms epoch"),
        (b'{"online": true, "timestamp": 18446744073709551616}', "not a ms epoch"),
        (b'{"online": true, "timestamp": 1' + b"0" * 5000 + b"}", "too large"),
        (b"[" * 3000 + b"]" * 3000, "too large"),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),  # nesting bomb under the size limit
    ],
)
def test_anything_else_raises_state_error(data: bytes, reason: str) -> None:
    with pytest.raises(SparkplugStateError, match=reason):
        parse_state(data)


def test_non_bytes_and_bad_format_arguments_raise_state_error() -> None:
    with pytest.raises(SparkplugStateError):
        parse_state("ONLINE")  # type: ignore[arg-type]
    with pytest.raises(SparkplugStateError):
        format_state(True, -1)
    with pytest.raises(SparkplugStateError):
        format_state(1, 5)  # type: ignore[arg-type]
    with pytest.raises(SparkplugStateError):
        format_state(True, True)


KEYS = st.sampled_from(["online", "timestamp", "x"])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner),
            max_leaves=8,
        ).map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_any_bytes_parse_or_raise_state_error(data: bytes) -> None:
    try:
        state = parse_state(data)
    except SparkplugStateError:
        return
    assert type(state.online) is bool
    assert state.legacy or type(state.timestamp) is int
