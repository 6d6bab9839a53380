"""Signed context (issue 18): the canonical form, Ed25519 signatures of context events,
the key files, and the engine's verdict on each event (acknowledgement and rejected row)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine_helpers import engine_config, running_engine
from tests.test_context_identity import EVENT_VALIDATOR, T, events
from uns.client.importer import parse_jsonl
from uns.config import load_config
from uns.core.context import event_id
from uns.core.signing import canonical_json, event_signing_bytes, sign_event, verify_event
from uns.engine.daemon import build_engine
from uns.engine.dispatch import Dispatcher
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.errors import ConfigError, EngineError, SignatureError
from uns.keyring import load_private_key, load_public_key, load_trusted_keys, new_key_pair
from uns.lake import connect
from uns.mqtt.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent

PATH = "acme/basel/pilot/usp/br-101"
NS = "signed"
TOPIC = f"{NS}/uns/_context/{PATH}"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # fixed: examples stay reproducible
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TRUSTED = {"qa-line1": KEY.public_key()}


# ------------------------------------------------------------------ pure: canonical form, verify


def test_the_canonical_form_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"é": [1, "x"]}}) == '{"a":{"é":[1,"x"]},"b":1}'.encode()
    with pytest.raises(SignatureError, match="canonical"):
        canonical_json({"x": float("nan")})


@settings(max_examples=150, deadline=None)
@given(events())
def test_a_signed_event_verifies_names_its_key_and_is_valid_by_the_schema(event: dict[str, Any]) -> None:
    signed = sign_event(KEY, "qa-line1", PATH, event)
    EVENT_VALIDATOR.validate(signed)
    assert verify_event(PATH, signed, TRUSTED, required=True) == "qa-line1"
    # key order and the path's slashes do not matter; the signature covers the content
    reordered = dict(reversed(list(signed.items())))
    assert verify_event(f"/{PATH}/", reordered, TRUSTED, required=True) == "qa-line1"


@settings(max_examples=300, deadline=None)
@given(events(), st.data())
def test_any_changed_byte_of_a_signed_event_is_rejected(event: dict[str, Any], data: st.DataObject) -> None:
    """The oracle: the payload as sent (compact JSON, so that every byte is content) is
    accepted; the same payload with any one byte changed is never applied (not JSON, a
    malformed event, or a signature that fails)."""
    payload = canonical_json(sign_event(KEY, "qa-line1", PATH, event))
    d = dispatcher(require=True)
    assert ack(d, payload)["status"] == "applied"
    i = data.draw(st.integers(0, len(payload) - 1), label="byte")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != payload[i]), label="new value")
    changed = payload[:i] + bytes([byte]) + payload[i + 1 :]
    answer = ack(dispatcher(require=True), changed)
    assert answer["status"] == "rejected", (changed, answer)


def test_the_base64_of_a_signature_has_one_spelling() -> None:
    """64 bytes leave 4 unused bits in the last base64 digit: another digit there would
    decode to the same signature, so only the canonical spelling is taken."""
    signed = sign_event(KEY, "qa-line1", PATH, {"ts": 1, "set": {"a": "b"}})
    sig = signed["signature"]["sig"]
    assert sig.endswith("==")
    raw = base64.b64decode(sig)
    alias = sig[:-3] + chr(ord(sig[-3]) + 1) + "=="
    assert base64.b64decode(alias) == raw  # what a lax decoder would take
    signed["signature"]["sig"] = alias
    with pytest.raises(SignatureError, match="base64"):
        verify_event(PATH, signed, TRUSTED, required=True)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("signature"), "unsigned event: context.require_signature is on"),
        (lambda e: e.update(signature=sign_event(OTHER, "qa-line1", PATH, e)["signature"]), "bad signature"),
        (
            lambda e: e.update(signature=sign_event(KEY, "someone", PATH, e)["signature"]),
            "not among the trusted",
        ),
        (lambda e: e.update(reason="changed after signing"), "bad signature"),
        (lambda e: e["signature"].update(alg="RSA"), "algorithm must be 'Ed25519'"),
        (lambda e: e["signature"].update(sig="AAAA"), "not base64 of 64 bytes"),
        (lambda e: e["signature"].update(key="../etc"), "bad key name"),
        (lambda e: e["signature"].update(extra=1), "unknown signature fields"),
        (lambda e: e.update(signature="x"), "must be an object"),
    ],
)
def test_a_bad_signature_is_refused_with_its_reason(mutate: Any, reason: str) -> None:
    event = sign_event(KEY, "qa-line1", PATH, {"ts": T + 5, "set": {"phase": "growth"}, "user": "jdoe"})
    mutate(event)
    with pytest.raises(SignatureError, match=reason.replace("(", r"\(")):
        verify_event(PATH, event, TRUSTED, required=True)
    answer = ack(dispatcher(require=True), json.dumps(event).encode())
    assert answer["status"] == "rejected" and reason in answer["reason"]


def test_a_signature_binds_the_event_to_its_path() -> None:
    signed = sign_event(KEY, "qa-line1", PATH, {"ts": T + 5, "set": {"batch_id": "B1"}})
    assert event_signing_bytes(PATH, signed) != event_signing_bytes(PATH + "x", signed)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_event(f"{PATH}/other", signed, TRUSTED, required=True)


def test_without_the_requirement_unsigned_events_pass_and_signed_ones_are_still_checked() -> None:
    assert verify_event(PATH, {"ts": 1, "set": {"a": "b"}}, TRUSTED, required=False) is None
    forged = sign_event(OTHER, "qa-line1", PATH, {"ts": 1, "set": {"a": "b"}})
    with pytest.raises(SignatureError, match="bad signature"):
        verify_event(PATH, forged, TRUSTED, required=False)


# ------------------------------------------------------------------ the engine's verdict


def dispatcher(*, require: bool) -> Dispatcher:
    """An engine's dispatcher trusting TRUSTED (set directly: these keys have no files)."""
    engine = Engine(engine_config("mqtt://memory:1883", NS), transport=MemoryBroker())
    engine.dispatch.trusted_keys = TRUSTED
    engine.dispatch.require_signature = require
    engine.dispatch.require_reason = False  # events of any time: the reason rule has its own tests
    return engine.dispatch


def ack(d: Dispatcher, payload: bytes) -> dict[str, Any]:
    _batch, _rebirths, (publish,) = d.process_context(TOPIC, payload, T + 1000)
    answer: dict[str, Any] = json.loads(publish.payload)
    return answer


def test_the_engine_stores_the_signer_and_rejects_an_unsigned_event_with_its_reason() -> None:
    d = dispatcher(require=True)
    signed = sign_event(KEY, "qa-line1", PATH, {"id": "mes-1", "ts": T + 5, "set": {"batch_id": "B1"}})
    batch, _, (publish,) = d.process_context(TOPIC, json.dumps(signed).encode(), T + 1000)
    assert json.loads(publish.payload)["status"] == "applied"
    assert [(c.key, c.value, c.signer) for c in batch.context] == [("batch_id", "B1", "qa-line1")]
    assert d.context.at(PATH, T + 10) == {"batch_id": "B1"}
    unsigned = b'{"id": "mes-2", "ts": %d, "set": {"batch_id": "B2"}}' % (T + 6)
    batch, _, (publish,) = d.process_context(TOPIC, unsigned, T + 1001)
    answer = json.loads(publish.payload)
    assert (answer["id"], answer["status"]) == ("mes-2", "rejected")
    assert answer["reason"] == "unsigned event: context.require_signature is on"
    assert [(r.topic, r.payload, r.error) for r in batch.rejected] == [(TOPIC, unsigned, answer["reason"])]
    assert not batch.context and d.context.at(PATH, T + 10) == {"batch_id": "B1"}


def test_require_signature_needs_a_trusted_keys_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"require_signature needs audit\.trusted_keys"):
        load_config(env={}, overrides={"context.require_signature": True})
    config = engine_config("mqtt://memory:1883", NS, **{"audit.trusted_keys": str(tmp_path / "none")})
    with pytest.raises(EngineError, match="does not exist"):
        Engine(config, transport=MemoryBroker())


def test_an_event_signed_at_its_source_is_imported_as_signed() -> None:
    """uns context import without --key keeps a JSON Lines event's signature valid: an
    event signed without an id is sent as it is (the engine derives the same id)."""
    signed = sign_event(KEY, "qa-line1", PATH, {"ts": T + 7, "set": {"lot": "L-7"}, "source": "mes"})
    with_id = sign_event(KEY, "qa-line1", PATH, {"id": "mes-9", "ts": T + 8, "set": {"lot": "L-8"}})
    parsed = parse_jsonl("\n".join(json.dumps({"path": PATH, **e}) for e in (signed, with_id)))
    assert not parsed.bad
    first, second = parsed.events
    assert first.event == signed and first.id == event_id(PATH, signed)
    assert second.event == with_id and second.id == "mes-9"
    for ev in parsed.events:
        assert verify_event(PATH, ev.event, TRUSTED, required=True) == "qa-line1"


# ------------------------------------------------------------------ key files


def test_a_new_key_pair_is_private_to_its_owner_and_not_trusted(tmp_path: Path) -> None:
    private, public = new_key_pair("qa-jdoe", tmp_path / "me")
    assert (private.name, public.name) == ("qa-jdoe.key", "qa-jdoe.pub")
    assert private.parent == public.parent == tmp_path / "me"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    name, key = load_private_key(private)
    assert load_trusted_keys(tmp_path / "me") == {"qa-jdoe": load_public_key(public)}  # only if put there
    signed = sign_event(key, name, PATH, {"ts": 1, "set": {"a": "b"}})
    assert verify_event(PATH, signed, {name: load_public_key(public)}, required=True) == "qa-jdoe"
    with pytest.raises(SignatureError, match="exists already"):
        new_key_pair("qa-jdoe", tmp_path / "me")
    with pytest.raises(SignatureError, match="bad key name"):
        new_key_pair("../x", tmp_path)


def test_a_private_key_can_be_encrypted_with_a_passphrase(tmp_path: Path) -> None:
    private, _ = new_key_pair("qa-enc", tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    with pytest.raises(SignatureError, match="is encrypted: give its passphrase"):
        load_private_key(private)
    with pytest.raises(SignatureError, match=r"cannot decrypt private key .*wrong passphrase"):
        load_private_key(private, b"wrong")
    name, key = load_private_key(private, b"correct horse")
    assert name == "qa-enc" and isinstance(key, Ed25519PrivateKey)
    private.chmod(0o644)  # encrypted: the passphrase, not the mode, protects it
    assert load_private_key(private, b"correct horse")[0] == "qa-enc"
    with pytest.raises(SignatureError, match="passphrase is empty"):
        new_key_pair("qa-empty", tmp_path, passphrase=b"")


def test_unusable_key_files_are_named(tmp_path: Path) -> None:
    private, public = new_key_pair("k1", tmp_path)
    private.chmod(0o644)
    with pytest.raises(SignatureError, match="accessible by others: chmod 600"):
        load_private_key(private)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    with pytest.raises(SignatureError, match="not a PEM private key"):
        load_private_key(bad)
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nxx\n")
    with pytest.raises(SignatureError, match=r"broken\.pub cannot be read"):
        load_trusted_keys(tmp_path / "trusted")
    assert load_trusted_keys(None) == {}
    assert public.exists()


# ------------------------------------------------------------------ end to end (real mosquitto)


def _uns(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uns", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.integration
async def test_signed_context_is_applied_with_its_signer_and_the_rest_rejected_with_the_reason(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    trusted = tmp_path / "trusted"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env |= {"UNS_AUDIT_TRUSTED_KEYS": str(trusted), "PYTHONPATH": str(ROOT)}
    lake_dir = tmp_path / "lake"
    made = _uns("keys", "new", "qa-jdoe", "--dir", str(tmp_path / "me"), env=env)
    assert made.returncode == 0, made.stderr
    assert "not trusted yet" in made.stdout
    key = tmp_path / "me" / "qa-jdoe.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and not trusted.exists()
    trust = ("--full-name", "J. Doe", "--reason", "line 1 QA", "--lake", str(lake_dir))
    made = _uns("keys", "trust", str(key.with_suffix(".pub")), "--name", "qa-jdoe", *trust, env=env)
    assert made.returncode == 0 and "trusted key qa-jdoe of qa-jdoe (J. Doe)" in made.stdout, made.stderr
    assert (trusted / "qa-jdoe.pub").is_file()
    _uns("keys", "new", "intruder", "--dir", str(tmp_path / "me"), env=env)  # never trusted
    config = engine_config(
        broker,
        ns,
        **{
            "lake.path": str(lake_dir),
            "lake.commit_interval": 0.2,
            "context.require_signature": True,
            "audit.trusted_keys": str(trusted),
        },
    )
    common = ("--broker", broker.url, "--prefix", f"{ns}/uns", "--wait", "10")
    rows = tmp_path / "batches.csv"
    rows.write_text(f"ts,path,key,value,user,reason\n1767261600000,{PATH},lot,L-1,jdoe,import\n")
    async with running_engine(build_engine(config)):
        signed, unsigned, intruder, imported = await asyncio.gather(
            asyncio.to_thread(
                _uns,
                "context",
                "set",
                PATH,
                "batch_id=B-1",
                *common,
                "--key",
                str(key),
                "--reason",
                "MES down",
                env=env,
            ),
            asyncio.to_thread(_uns, "context", "set", PATH, "phase=growth", *common, env=env),
            asyncio.to_thread(
                _uns,
                "context",
                "set",
                PATH,
                "phase=x",
                *common,
                "--key",
                str(tmp_path / "me" / "intruder.key"),
                env=env,
            ),
            asyncio.to_thread(_uns, "context", "import", str(rows), *common, "--key", str(key), env=env),
        )
    assert signed.returncode == 0 and "applied by engine" in signed.stdout, signed.stderr
    assert imported.returncode == 0 and "1 applied" in imported.stdout, imported.stderr
    assert unsigned.returncode == 1
    assert (
        "rejected" in unsigned.stderr and "unsigned event: context.require_signature is on" in unsigned.stderr
    )
    assert intruder.returncode == 1 and "'intruder', which is not among the trusted keys" in intruder.stderr
    con = connect(lake_dir)
    try:
        changes = con.execute("SELECT key, value, signer FROM context ORDER BY key").fetchall()
        errors = con.execute("SELECT error FROM rejected ORDER BY error").fetchall()
        audited = con.execute(
            "SELECT json_extract_string(detail, '$.key'), json_extract_string(detail, '$.signer') "
            "FROM audit WHERE kind = 'context_change' ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert changes == [("batch_id", "B-1", "qa-jdoe"), ("lot", "L-1", "qa-jdoe")]
    assert audited == [("batch_id", "qa-jdoe"), ("lot", "qa-jdoe")]  # the audit trail names the signer too
    assert [e for (e,) in errors] == [
        "signed by key 'intruder', which is not among the trusted keys",
        "unsigned event: context.require_signature is on",
    ]
