"""Signatures of batch reviews (issue 18): `uns batch sign` as an audit entry, checked by
`uns audit verify`; the report lists them and flags those the data changed under."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from uns.audit.signatures import signature_findings, signed_content
from uns.audit.verify import read_chain
from uns.batch.signing import report_content_sha256
from uns.cli.app import app
from uns.core.events import Batch, ContextChange, Sample
from uns.core.signing import canonical_json
from uns.keyring import load_trusted_keys, new_key_pair
from uns.lake import LakeConfig, LakeSink
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text())
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


def _uns(*args: str, env: dict[str, str]) -> Result:
    """The command line, in this process (typer's runner: a subprocess per command would
    cost seconds each); ``env`` replaces the UNS_* environment."""
    clean = {k: None for k in os.environ if k.startswith("UNS_")}
    result = CliRunner().invoke(app, list(args), env={**clean, **env})
    return Result(result.exit_code, result.stdout, result.stderr)


def _env(trusted: Path) -> dict[str, str]:
    return {"UNS_AUDIT_TRUSTED_KEYS": str(trusted)}


# ------------------------------------------------------------------ pure


@settings(max_examples=100, deadline=None)
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


def test_a_signature_covers_its_own_entry_only() -> None:
    detail = {"meaning": "approved", "report_sha256": "ab" * 32}
    base = signed_content(1, "J. Doe", "", BATCH, detail)
    assert base == canonical_json(
        {"kind": "signature", "batch_id": BATCH, "user": "J. Doe", "reason": "", "signed_at_us": 1,
         "meaning": "approved", "report_sha256": "ab" * 32}
    )  # fmt: skip
    others = [
        signed_content(2, "J. Doe", "", BATCH, detail),
        signed_content(1, "M. Roe", "", BATCH, detail),
        signed_content(1, "J. Doe", "x", BATCH, detail),
        signed_content(1, "J. Doe", "", "B-OTHER", detail),
        signed_content(1, "J. Doe", "", BATCH, {**detail, "meaning": "reviewed"}),
        signed_content(1, "J. Doe", "", BATCH, {**detail, "report_sha256": "cd" * 32}),
    ]
    assert base not in others and len(set(others)) == len(others)


# ------------------------------------------------------------------ on a real lake


@pytest.mark.integration
async def test_sign_verify_a_changed_report_is_flagged_and_bad_keys_are_refused(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    trusted = tmp_path / "trusted"
    await _write_batch(lake_dir)
    key, _ = new_key_pair("qa-jdoe", tmp_path / "me", trusted)
    stranger, _ = new_key_pair("qa-jdoe", tmp_path / "stranger", tmp_path / "elsewhere")  # same name
    untrusted, _ = new_key_pair("nobody", tmp_path / "me", tmp_path / "elsewhere")
    env = _env(trusted)
    lake_opt = ("--lake", str(lake_dir))

    signed = _uns("batch", "sign", BATCH, "--meaning", "reviewed", "--user", "J. Doe", *lake_opt, env=env)
    assert signed.returncode == 0, signed.stderr
    assert "reviewed by J. Doe (electronically, no key)" in signed.stdout
    approved = _uns(
        "batch", "sign", BATCH, "--meaning", "approved", "--user", "J. Doe", "--reason", "released for QA",
        "--key", str(key), *lake_opt, env=env,
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert "digitally, key qa-jdoe" in approved.stdout
    for bad, why in (
        (stranger, "is not the private half of the trusted key qa-jdoe.pub"),
        (untrusted, "key 'nobody' is not trusted"),
    ):
        r = _uns(
            "batch",
            "sign",
            BATCH,
            "--meaning",
            "approved",
            "--user",
            "X",
            "--key",
            str(bad),
            *lake_opt,
            env=env,
        )
        assert r.returncode == 1 and why in r.stderr, r.stderr
    r = _uns("batch", "sign", BATCH, "--meaning", "liked", "--user", "X", *lake_opt, env=env)
    assert r.returncode == 1 and "meaning must be one of reviewed, approved, rejected" in r.stderr
    r = _uns("batch", "sign", "B-NONE", "--meaning", "approved", "--user", "X", *lake_opt, env=env)
    assert r.returncode == 1

    schema = json.loads((ROOT / "schemas" / "audit-detail.schema.json").read_text())
    for row in read_chain(lake_dir):
        if row.kind == "signature":
            jsonschema.validate(json.loads(row.detail), {**schema, "$ref": "#/$defs/signature"})
    verified = _uns("audit", "verify", *lake_opt, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith("; 1 digital signature verified")
    # another key of the same name, or no trusted key: the digital signature does not verify
    (tmp_path / "empty").mkdir()
    for trusted_dir, why in (
        (tmp_path / "elsewhere", "bad signature: the content does not match its signature by key 'qa-jdoe'"),
        (tmp_path / "empty", "signed by key 'qa-jdoe', which is not among the trusted keys"),
    ):
        r = _uns("audit", "verify", *lake_opt, env=_env(trusted_dir))
        assert r.returncode == 1 and f"J. Doe (approved): {why}" in r.stdout, r.stdout

    def report() -> dict[str, Any]:
        out = tmp_path / "report.json"
        r = _uns("batch", "report", BATCH, "--format", "json", "-o", str(out), *lake_opt, env=env)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(out.read_text())
        jsonschema.validate(doc, REPORT_SCHEMA)
        return doc

    doc = report()
    assert [(s["meaning"], s["user"], s["key"], s["covers_current"]) for s in doc["signatures"]] == [
        ("reviewed", "J. Doe", None, True),
        ("approved", "J. Doe", "qa-jdoe", True),
    ]
    assert doc["signatures"][1]["reason"] == "released for QA"
    assert {s["report_sha256"] for s in doc["signatures"]} == {doc["content_sha256"]}

    # the data changes after signing (a late correction of the batch's context)
    await _write_batch(lake_dir, extra=[_context(T0 + 5_000, "operator", "mroe", "e-late")])
    doc = report()
    assert [s["covers_current"] for s in doc["signatures"]] == [False, False]
    html = tmp_path / "report.html"
    r = _uns("batch", "report", BATCH, "-o", str(html), *lake_opt, env=env)
    assert r.returncode == 0, r.stderr
    assert html.read_text().count("no: the data changed after signing") == 2


@pytest.mark.integration
async def test_a_forged_signature_entry_is_named_by_audit_verify(tmp_path: Path) -> None:
    """The signature's entry rewritten with a valid chain (as a forger who recomputes the
    hashes would): the chain is intact, the Ed25519 signature is not."""
    lake_dir = tmp_path / "lake"
    trusted = tmp_path / "trusted"
    await _write_batch(lake_dir)
    key, _ = new_key_pair("qa-jdoe", tmp_path / "me", trusted)
    r = _uns("batch", "sign", BATCH, "--meaning", "rejected", "--user", "J. Doe", "--key", str(key),
             "--lake", str(lake_dir), env=_env(trusted))  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = [r for r in read_chain(lake_dir) if r.kind == "signature"]
    assert signature_findings([row], load_trusted_keys(trusted)) == (1, [])
    forged = row.__class__(**{**{f: getattr(row, f) for f in row.__slots__}, "actor": "M. Roe"})
    verified, findings = signature_findings([forged], load_trusted_keys(trusted))
    assert verified == 0
    assert findings == [
        f"uns-cli#{row.seq}: signature of batch {BATCH} by M. Roe (rejected): bad signature: "
        "the content does not match its signature by key 'qa-jdoe'"
    ]
    # and on disk: the audit table rewritten with the forged actor
    copy = tmp_path / "copy"
    shutil.copytree(lake_dir, copy)
    data = DeltaTable(copy / "audit").to_pyarrow_table()
    kinds, actors = data["kind"].to_pylist(), data["actor"].to_pylist()
    forged_actors = pa.array(
        ["M. Roe" if k == "signature" else a for k, a in zip(kinds, actors, strict=True)]
    )
    forged_table = data.set_column(data.schema.get_field_index("actor"), "actor", forged_actors)
    write_deltalake(DeltaTable(copy / "audit"), forged_table, mode="overwrite")
    r = _uns("audit", "verify", "--lake", str(copy), env=_env(trusted))
    assert r.returncode == 1
    assert "by M. Roe (rejected): bad signature" in r.stdout
