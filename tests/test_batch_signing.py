"""Signatures of batch reviews (issues 18, 28): `uns batch sign` as a signed audit entry of
an enrolled key's owner, over what the reviewer read; keys with a life cycle (trust,
revoke: audited); every report judges every signature (verified or, prominently, not;
covering this report, or the data changed, or another spec); `uns audit verify` names
what does not verify."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from deltalake import DeltaTable, write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from uns.audit.signatures import (
    BatchSignature,
    Signer,
    SigningKey,
    check_signature,
    signature_findings,
    signed_content,
)
from uns.audit.verify import read_chain
from uns.batch.signing import report_content_sha256
from uns.cli.app import app
from uns.core.events import Batch, ContextChange, Sample
from uns.core.signing import signature_block
from uns.errors import SignatureError
from uns.keyring import KeyOwner, Revocation, TrustedKey, load_keyring, new_key_pair
from uns.lake import LakeConfig, LakeSink
from uns.lake.audit_entries import entry
from uns.lake.hashing import GENESIS, link
from uns.lake.manual import cli_recorder
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text())
DETAIL_SCHEMA = json.loads((ROOT / "schemas" / "audit-detail.schema.json").read_text())
PATH = "acme/basel/pilot/usp/br-101"
T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z
BATCH = "B-SIGN-1"


def _context(ts: int, key: str, value: str | None, ident: str) -> ContextChange:
    return ContextChange(ts, ts, PATH, key, value, "mes", "jdoe", None, ident)


async def _write_batch(lake_dir: Path, *, extra: list[ContextChange] | None = None) -> None:
    """One closed batch of 10 s with one metric sampled every second."""
    changes = [
        _context(T0, "batch_id", BATCH, "e-start"),
        _context(T0, "product", "mAb-A", "e-start"),
        _context(T0, "phase", "growth", "e-start"),
        _context(T0 + 10_000, "batch_id", None, "e-end"),
        _context(T0 + 10_000, "phase", None, "e-end"),
        *(extra or []),
    ]
    samples = [
        Sample(
            "Pilot", "BR101", None, "Temperature", DataType.Double, 37.0 + i / 100, T0 + i * 1000,
            T0 + i * 1000, seq=i, bdseq=0, path=PATH, context={"batch_id": BATCH},
        )
        for i in range(10)
    ]  # fmt: skip
    async with LakeSink(lake_dir, LakeConfig(commit_interval=0.05)) as sink:
        sink.add(Batch(samples=samples, context=changes))


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def _uns(*args: str, env: dict[str, str], stdin: str | None = None) -> Result:
    """The command line, in this process (typer's runner: a subprocess per command would
    cost seconds each); ``env`` replaces the UNS_* environment."""
    clean = {k: None for k in os.environ if k.startswith("UNS_")}
    result = CliRunner().invoke(app, list(args), env={**clean, **env}, input=stdin)
    return Result(result.exit_code, result.stdout, result.stderr)


# ------------------------------------------------------------------ pure: content and judgement

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SERVICE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OWNER = KeyOwner("jdoe", "J. Doe", "QA reviewer")
KEYRING = {
    "qa-jdoe": TrustedKey("qa-jdoe", KEY.public_key(), OWNER),
    "web": TrustedKey("web", SERVICE.public_key(), KeyOwner("uns-web", "uns web workspace", None, "users")),
    "bare": TrustedKey("bare", SERVICE.public_key()),
}
SHA = "ab" * 32
JDOE = Signer("jdoe", "J. Doe", "QA reviewer")


def _signed_rows(
    signer: Signer = JDOE,
    *,
    key: tuple[str, Ed25519PrivateKey] = ("qa-jdoe", KEY),
    ts: int = T0 * 1000 + 60_000_000,
    before: int = 2,
) -> list[Any]:
    """A uns-cli chain of ``before`` report entries and one signature entry, as signed."""
    rows = link("uns-cli", (0, GENESIS), [entry(ts - 1000, "report", BATCH, {"sha256": SHA})] * before)
    head = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
    detail: dict[str, Any] = {
        "v": 2, "batch_id": BATCH, "user_id": signer.user_id, "full_name": signer.full_name,
        "role": signer.role, "meaning": "approved", "report_sha256": SHA, "spec": None,
        "chain_head": {"writer": "uns-cli", "seq": head[0], "hash": head[1]},
    }  # fmt: skip
    detail["signature"] = signature_block(key[1], key[0], signed_content(ts, "ok", BATCH, detail))
    return rows + link(
        "uns-cli", head, [entry(ts, "signature", BATCH, detail, actor=signer.user_id, reason="ok")]
    )


def _judge(row: Any, **kw: Any) -> tuple[bool, str, str]:
    check = check_signature(BatchSignature.of_row(row), kw.pop("keyring", KEYRING), **kw)
    return check.verified, check.why, check.content


def test_a_signature_verifies_and_covers_exactly_the_report_it_signed() -> None:
    sig = _signed_rows()[-1]
    assert _judge(sig) == (True, "", "unknown")
    assert _judge(sig, current_sha256=SHA).count(True) == 1
    assert _judge(sig, current_sha256=SHA)[2] == "current"
    assert _judge(sig, current_sha256="cd" * 32)[2] == "data_changed"
    assert _judge(sig, current_sha256="cd" * 32, current_spec={"file": "other.toml", "sha256": "1"})[2] == (
        "spec_changed"
    )
    jsonschema.validate(json.loads(sig.detail), {**DETAIL_SCHEMA, "$ref": "#/$defs/signature"})


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["user_id", "full_name", "role", "meaning", "report_sha256", "spec", "batch_id"]),
       st.text(min_size=1, max_size=8))  # fmt: skip
def test_any_changed_field_of_a_signed_entry_fails(field: str, value: str) -> None:
    sig = _signed_rows()[-1]
    detail = json.loads(sig.detail)
    if detail[field] == value:
        return
    detail[field] = value
    forged = replace(sig, detail=json.dumps(detail))
    assert _judge(forged)[0] is False
    for column, other in (("actor", "mroe"), ("reason", "x"), ("ts", sig.ts + 1)):
        changed = replace(sig, **{column: other})
        assert _judge(changed)[0] is (column == "actor")  # the actor is not signed: user_id is


def test_a_replayed_or_zeroed_or_keyless_entry_is_no_signature() -> None:
    rows = _signed_rows()
    sig = rows[-1]
    replayed = link(
        "uns-cli", (sig.seq, sig.hash), [(sig.ts, sig.kind, sig.actor, sig.reason, sig.subject, sig.detail)]
    )
    assert _judge(replayed[0])[:2] == (
        False,
        "signed at another place in the audit trail (a copied or replayed entry)",
    )
    detail = json.loads(sig.detail)
    detail["signature"]["sig"] = base64.b64encode(bytes(64)).decode()
    assert "bad signature" in _judge(replace(sig, detail=json.dumps(detail)))[1]
    del detail["signature"]
    verified, why, _ = _judge(replace(sig, detail=json.dumps(detail)))
    assert not verified and why.startswith("no key: an electronic note, not a signature")


def test_a_key_signs_only_for_its_owner_a_service_key_for_its_users() -> None:
    as_other = _signed_rows(Signer("msmith", "M. Smith (Head of QA)"))[-1]
    assert (
        _judge(as_other)[1] == "key 'qa-jdoe' belongs to jdoe (J. Doe), not to msmith (M. Smith (Head of QA))"
    )
    via_web = _signed_rows(Signer("msmith", "M. Smith", "approver"), key=("web", SERVICE))[-1]
    assert _judge(via_web)[0] is True
    no_owner = _signed_rows(key=("bare", SERVICE))[-1]
    assert "has no enrolled owner" in _judge(no_owner)[1]


def test_a_revocation_voids_the_signatures_made_from_its_time_on() -> None:
    sig = _signed_rows()[-1]
    at = sig.ts
    for revoked_from, verified in ((at + 1, True), (at, False), (at - 1, False)):
        keyring = {**KEYRING, "qa-jdoe": KEYRING["qa-jdoe"].with_revocation(Revocation(revoked_from, "lost"))}
        ok, why, _ = _judge(sig, keyring=keyring)
        assert ok is verified, why
        assert verified or ("made after key 'qa-jdoe' was revoked (from " in why and why.endswith("lost)"))


def test_a_signature_dated_before_its_batch_is_not_verified() -> None:
    sig = _signed_rows(ts=T0 * 1000 - 30 * 86_400_000_000)[-1]  # the clock set back 30 days
    assert (
        _judge(sig, not_before_us=T0 * 1000)[1]
        == "dated before the batch started (was the host clock wrong?)"
    )


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["report_time", "lake_versions"]), st.text(max_size=20))
def test_the_signed_content_ignores_what_changes_with_every_rendering(field: str, value: str) -> None:
    doc: dict[str, Any] = {
        "batch": {"batch_id": BATCH, "report_time": "x", "lake_versions": {}},
        "verdict": "v",
    }
    sha = report_content_sha256(doc)
    rerendered = {
        **doc,
        "batch": {**doc["batch"], field: value},
        "signatures": [{"a": 1}],
        "content_sha256": "0",
    }
    assert report_content_sha256(rerendered) == sha
    changed = {**doc, "verdict": "1 exception"}
    assert report_content_sha256(changed) != sha


# ------------------------------------------------------------------ on a real lake


def _keys(tmp_path: Path, lake_dir: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Keys made with `uns keys new` and trusted with `uns keys trust` (except `stranger`)."""
    trusted = tmp_path / "trusted"
    env = {"UNS_AUDIT_TRUSTED_KEYS": str(trusted), "UNS_LAKE": str(lake_dir)}
    paths: dict[str, Path] = {}
    for name in ("qa-jdoe", "qa-mroe", "stranger", "web"):
        made = _uns("keys", "new", name, "--dir", str(tmp_path / "keys"), env=env)
        assert made.returncode == 0 and "not trusted yet" in made.stdout, made.stderr
        paths[name] = tmp_path / "keys" / f"{name}.key"
    encrypted = _uns("keys", "new", "qa-enc", "--dir", str(tmp_path / "keys"), "--passphrase-stdin",
                     env=env, stdin="s3cret phrase\n")  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    paths["qa-enc"] = tmp_path / "keys" / "qa-enc.key"
    for name, user, full, extra in (
        ("qa-jdoe", "jdoe", "J. Doe", ("--role", "QA reviewer")),
        ("qa-mroe", "mroe", "M. Roe", ()),
        ("qa-enc", "eve", "E. Encrypted", ()),
        ("web", "uns-web", "uns web workspace", ("--service",)),
    ):
        done = _uns("keys", "trust", str(paths[name].with_suffix(".pub")), "--name", name, "--user-id", user,
                    "--full-name", full, "--reason", "enrolled by QA", *extra, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"trusted key {name} of {user} ({full})" in done.stdout
    return env, paths


def _report(tmp_path: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    r = _uns("batch", "report", BATCH, "--format", "json", "-o", str(out), *extra, env=env)
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    return doc


def _judged(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(s["meaning"], s["user"], s["full_name"], s["verified"], s["content"]) for s in doc["signatures"]]


@pytest.mark.integration
async def test_keys_are_trusted_and_sign_only_as_their_owner_over_what_was_read(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    await _write_batch(lake_dir)
    env, keys = _keys(tmp_path, lake_dir)

    def sign(*args: str, stdin: str | None = None) -> Result:
        return _uns("batch", "sign", BATCH, *args, env=env, stdin=stdin)

    # nothing signs without a trusted key of its own
    assert sign("--meaning", "reviewed").returncode == 2  # --key is required: no keyless signature
    r = sign("--meaning", "reviewed", "--key", str(keys["stranger"]))
    assert r.returncode == 1 and "key 'stranger' is not trusted" in r.stderr
    r = sign("--meaning", "reviewed", "--key", str(keys["qa-jdoe"]), "--user", "M. Smith")
    assert r.returncode == 1 and "--user 'M. Smith' is not the owner of key 'qa-jdoe' (jdoe)" in r.stderr
    r = sign("--meaning", "reviewed", "--key", str(keys["web"]))
    assert r.returncode == 1 and "is a service's key" in r.stderr
    r = sign("--meaning", "liked", "--key", str(keys["qa-jdoe"]))
    assert r.returncode == 1 and "meaning must be one of reviewed, approved, rejected" in r.stderr
    r = sign("--meaning", "reviewed", "--key", str(keys["qa-enc"]))
    assert r.returncode == 1 and "is encrypted: give its passphrase (--passphrase-stdin)" in r.stderr

    # the reviewer signs what they read: a stale hash is refused, the current one signs
    sha = _report(tmp_path, env)["content_sha256"]
    r = sign("--meaning", "reviewed", "--key", str(keys["qa-jdoe"]), "--expect-sha256", "0" * 64)
    assert (
        r.returncode == 1
        and f"the report content changed since it was read: its SHA-256 is now {sha}" in r.stderr
    )
    r = sign("--meaning", "reviewed", "--key", str(keys["qa-jdoe"]), "--expect-sha256", sha, "--user", "jdoe")
    assert r.returncode == 0, r.stderr
    assert "reviewed by J. Doe (jdoe) at 20" in r.stdout and f"report content sha256 {sha}" in r.stdout
    r = sign("--meaning", "approved", "--key", str(keys["qa-enc"]), "--passphrase-stdin",
             "--reason", "released", stdin="s3cret phrase\n")  # fmt: skip
    assert r.returncode == 0, r.stderr

    for row in read_chain(lake_dir):
        if row.kind in ("signature", "key_trusted"):
            jsonschema.validate(json.loads(row.detail), {**DETAIL_SCHEMA, "$ref": f"#/$defs/{row.kind}"})
    trusts = [r for r in read_chain(lake_dir) if r.kind == "key_trusted"]
    assert sorted(r.subject for r in trusts) == ["qa-enc", "qa-jdoe", "qa-mroe", "web"]
    assert {r.reason for r in trusts} == {"enrolled by QA"}
    verified = _uns("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[0].endswith(
        "; 2 digital signatures verified (by jdoe (J. Doe), eve (E. Encrypted))"
    )  # and who signed (issue 27)

    doc = _report(tmp_path, env)
    assert _judged(doc) == [
        ("reviewed", "jdoe", "J. Doe", True, "current"),
        ("approved", "eve", "E. Encrypted", True, "current"),
    ]
    assert doc["signatures"][0]["role"] == "QA reviewer" and all(s["counts"] for s in doc["signatures"])

    # another spec: not this report; then the data changes: not this report either
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "pilot"\nversion = "2"\n[[limit]]\nmetric = "Temperature"\naction_high = 40.0\n')
    assert {s["content"] for s in _report(tmp_path, env, "--spec", str(spec))["signatures"]} == {
        "spec_changed"
    }
    await _write_batch(lake_dir, extra=[_context(T0 + 5_000, "operator", "mroe", "e-late")])
    doc = _report(tmp_path, env)
    assert [(s["verified"], s["content"], s["counts"]) for s in doc["signatures"]] == [
        (True, "data_changed", False)
    ] * 2
    html = tmp_path / "report.html"
    assert _uns("batch", "report", BATCH, "-o", str(html), env=env).returncode == 0
    text = html.read_text()
    assert text.count("the data changed after signing") == 2 and text.count("NOT VERIFIED") == 0


@pytest.mark.integration
async def test_a_revoked_key_keeps_its_earlier_signatures_and_voids_later_ones(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    await _write_batch(lake_dir)
    env, keys = _keys(tmp_path, lake_dir)
    for meaning in ("reviewed", "approved"):
        r = _uns("batch", "sign", BATCH, "--meaning", meaning, "--key", str(keys["qa-jdoe"]), env=env)
        assert r.returncode == 0, r.stderr
    first, second = sorted((r for r in read_chain(lake_dir) if r.kind == "signature"), key=lambda r: r.seq)
    between = (first.ts + second.ts) // 2 // 1000  # epoch ms between the two signatures
    r = _uns("keys", "revoke", "qa-jdoe", "--from", str(between), "--reason", "key lost", env=env)
    assert r.returncode == 0 and "revoked key qa-jdoe from 20" in r.stdout, r.stderr
    again = _uns("keys", "revoke", "qa-jdoe", "--reason", "twice", env=env)
    assert again.returncode == 1 and "is revoked already" in again.stderr
    listed = _uns("keys", "list", env=env)
    assert "qa-jdoe" in listed.stdout and "from 20" in listed.stdout

    def judged() -> list[tuple[bool, str]]:
        return [(s["verified"], s["why"]) for s in _report(tmp_path, env)["signatures"]]

    (ok, _), (bad, why) = judged()
    assert (
        ok and not bad and why.startswith("made after key 'qa-jdoe' was revoked (from ") and "key lost" in why
    )
    verify = _uns("audit", "verify", env=env)
    assert verify.returncode == 1
    assert verify.stdout.splitlines() == [
        f"uns-cli#{second.seq}: signature of batch {BATCH} by J. Doe (approved): {why}"
    ]
    # the trail remembers the revocation even when its file goes
    (tmp_path / "trusted" / "qa-jdoe.revoked.json").unlink()
    assert [v for v, _ in judged()] == [True, False]
    r = _uns("batch", "sign", BATCH, "--meaning", "rejected", "--key", str(keys["qa-jdoe"]), env=env)
    assert r.returncode == 1 and "key 'qa-jdoe' is not trusted (or not this private key's)" not in r.stderr
    assert "is revoked" in r.stderr
    revoked = [r for r in read_chain(lake_dir) if r.kind == "key_revoked"]
    assert [(r.subject, r.reason) for r in revoked] == [("qa-jdoe", "key lost")]
    jsonschema.validate(json.loads(revoked[0].detail), {**DETAIL_SCHEMA, "$ref": "#/$defs/key_revoked"})


REPLAYED = "signed at another place in the audit trail (a copied or replayed entry)"
ZEROED = "bad signature: the content does not match its signature by key 'qa-jdoe'"


@pytest.mark.integration
async def test_replayed_zeroed_forged_and_keyless_signatures_are_listed_as_not_verified(
    tmp_path: Path,
) -> None:
    """An attacker with write access appends entries through the library (so every hash is
    recomputed): a replay of a genuine signature, one with a zeroed sig, a keyless one."""
    lake_dir = tmp_path / "lake"
    await _write_batch(lake_dir)
    env, keys = _keys(tmp_path, lake_dir)
    r = _uns("batch", "sign", BATCH, "--meaning", "reviewed", "--key", str(keys["qa-jdoe"]), env=env)
    assert r.returncode == 0, r.stderr
    (genuine,) = [r for r in read_chain(lake_dir) if r.kind == "signature"]
    detail = json.loads(genuine.detail)
    zeroed = {
        **detail,
        "meaning": "approved",
        "signature": {**detail["signature"], "sig": base64.b64encode(bytes(64)).decode()},
    }
    keyless = {
        "batch_id": BATCH,
        "meaning": "approved",
        "report_sha256": detail["report_sha256"],
        "spec": None,
    }
    recorder = cli_recorder(lake_dir)
    recorder.record(
        [entry(genuine.ts, "signature", BATCH, detail, actor=genuine.actor, reason=genuine.reason)]
    )

    def zeroed_here(head: tuple[int, str], _now: int) -> list[Any]:  # its chain head right, its sig zeroed
        where = {"writer": "uns-cli", "seq": head[0], "hash": head[1]}
        return [entry(genuine.ts + 1, "signature", BATCH, {**zeroed, "chain_head": where}, actor="jdoe")]

    recorder.record_with(zeroed_here)
    recorder.record([entry(genuine.ts + 2, "signature", BATCH, keyless, actor="QP Anyone")])
    doc = _report(tmp_path, env)
    got = [(s["meaning"], s["full_name"], s["verified"], s["counts"], s["why"]) for s in doc["signatures"]]
    assert got == [
        ("reviewed", "J. Doe", True, True, ""),
        ("reviewed", "J. Doe", False, False, REPLAYED),
        ("approved", "J. Doe", False, False, ZEROED),
        ("approved", "QP Anyone", False, False,
         "no key: an electronic note, not a signature (it does not count toward review or approval)"),
    ]  # fmt: skip
    html = tmp_path / "report.html"
    assert _uns("batch", "report", BATCH, "-o", str(html), env=env).returncode == 0
    # in the signatures table, and each beside the verdict too (the review's manifestations)
    assert html.read_text().count("NOT VERIFIED") == 6
    verify = _uns("audit", "verify", env=env)
    assert verify.returncode == 1
    assert [line.split(": ", 1)[1] for line in verify.stdout.splitlines()] == [
        f"signature of batch {BATCH} by J. Doe (reviewed): {REPLAYED}",
        f"signature of batch {BATCH} by J. Doe (approved): {ZEROED}",
    ]


@pytest.mark.integration
async def test_a_signature_is_refused_while_the_clock_is_before_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake_dir = tmp_path / "lake"
    await _write_batch(lake_dir)
    env, keys = _keys(tmp_path, lake_dir)
    import uns.lake.audit as audit_module  # noqa: PLC0415

    monkeypatch.setattr(audit_module, "_now_us", lambda: T0 * 1000 - 30 * 86_400_000_000)
    r = _uns("batch", "sign", BATCH, "--meaning", "approved", "--key", str(keys["qa-jdoe"]), env=env)
    assert r.returncode == 1
    assert "the host clock says 2025-12-02T10:00:00.000Z, before batch B-SIGN-1 started" in r.stderr


@pytest.mark.integration
async def test_a_forged_signature_entry_is_named_by_audit_verify(tmp_path: Path) -> None:
    """The signature's entry rewritten on disk with a valid chain (as a forger who recomputes
    the hashes would): the chain is intact, the Ed25519 signature is not."""
    lake_dir = tmp_path / "lake"
    await _write_batch(lake_dir)
    env, keys = _keys(tmp_path, lake_dir)
    key = str(keys["qa-jdoe"])
    r = _uns("batch", "sign", BATCH, "--meaning", "rejected", "--key", key, "--reason", "OOS", env=env)
    assert r.returncode == 0, r.stderr
    copy = tmp_path / "copy"
    shutil.copytree(lake_dir, copy)
    data = DeltaTable(copy / "audit").to_pyarrow_table()
    reasons = data["reason"].to_pylist()
    kinds = data["kind"].to_pylist()
    forged = pa.array(["fine" if k == "signature" else r for k, r in zip(kinds, reasons, strict=True)])
    table = data.set_column(data.schema.get_field_index("reason"), "reason", forged)
    write_deltalake(DeltaTable(copy / "audit"), table, mode="overwrite")
    rows = read_chain(copy)
    verified, _notes, findings = signature_findings(rows, load_keyring(tmp_path / "trusted"))
    assert verified == 0
    assert findings == [
        f"uns-cli#{next(r for r in rows if r.kind == 'signature').seq}: signature of batch {BATCH} by J. Doe "
        "(rejected): bad signature: the content does not match its signature by key 'qa-jdoe'"
    ]


def test_the_library_refuses_a_signer_the_key_may_not_sign_for(tmp_path: Path) -> None:
    from uns.batch.signing import key_may_sign, signer_of_key  # noqa: PLC0415

    key_may_sign(KEYRING["web"], Signer("anyone", "Any One"))  # a service key signs for its users
    with pytest.raises(SignatureError, match="belongs to jdoe"):
        key_may_sign(KEYRING["qa-jdoe"], Signer("msmith", "M. Smith"))
    assert signer_of_key(KEYRING["qa-jdoe"]) == Signer("jdoe", "J. Doe", "QA reviewer")
    with pytest.raises(SignatureError, match="no enrolled owner"):
        signer_of_key(KEYRING["bare"])
    assert SigningKey("qa-jdoe", KEY).name == "qa-jdoe"
    _private, _public = new_key_pair("fresh", tmp_path)
    assert load_keyring(tmp_path)["fresh"].owner is None  # a bare .pub: no owner, signs no record


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_every_printed_page_names_the_batch_the_report_hash_and_its_page(tmp_path: Path) -> None:
    """Item 7: the PDF's pages each carry the batch id, the report content hash and "page X
    of Y"; the audit details are readable key: value lines (no Python reprs); nothing long
    (a hash, a signature) is cut; the report says its times are UTC."""
    lake_dir = tmp_path / "lake"
    asyncio.run(_write_batch(lake_dir))  # a sync test: Playwright's sync API prints the PDF
    env, keys = _keys(tmp_path, lake_dir)
    r = _uns("batch", "sign", BATCH, "--meaning", "approved", "--key", str(keys["qa-jdoe"]), "--reason",
             "released after review of every exception listed", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (sig,) = [json.loads(r.detail) for r in read_chain(lake_dir) if r.kind == "signature"]
    pdf = tmp_path / "report.pdf"
    assert _uns("batch", "report", BATCH, "-f", "pdf", "-o", str(pdf), env=env).returncode == 0
    sha = _report(tmp_path, env)["content_sha256"]
    # reading order (no -layout): a wrapped cell's lines follow each other
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = [p for p in text.split("\f") if p.strip()]
    assert len(pages) >= 2
    for number, page in enumerate(pages, 1):
        assert f"Batch report {BATCH}" in page and f"page {number} of {len(pages)}" in page, page[:300]
        assert f"report content SHA-256 {sha}" in page, page[-300:]
    flat = "".join(text.split())
    assert sig["signature"]["sig"] in flat and sig["chain_head"]["hash"] in flat  # whole, not cut
    assert "AlltimesinthisreportareUTC" in flat
    audit = text[text.index("Audit trail") :]
    assert "None" not in audit and "{'" not in audit and "meaning: approved" in audit
