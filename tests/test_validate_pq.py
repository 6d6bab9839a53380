"""`uns validate --pq` (issue 30, item 5) and `uns audit review` (item 6) on a real lake: the
simulated pilot plant through a real mosquitto and `uns run` (``uns demo``), then the
plant's configuration, signatures, configuration changes and a lockout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from uns.config import load_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration
#: the numeric device metric the test's spec leaves out
LEFT_OUT = ("acme/basel/pilot/usp/br-102", "Agitation")


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uns.demo import run_demo  # noqa: PLC0415 - the whole engine

    lake = tmp_path_factory.mktemp("demo") / "lake"
    run_demo(duration=8, lake=str(lake), echo=lambda _line: None)
    return lake


def _plant(tmp_path: Path, demo_lake: Path) -> tuple[Path, Path]:
    """A copy of the demo lake and a configuration whose spec has a [[limit]] entry for every
    numeric device metric of the lake but one (:data:`LEFT_OUT`)."""
    from uns import lake as lakes  # noqa: PLC0415
    from uns.validation.pq import NUMERIC  # noqa: PLC0415

    lake = tmp_path / "lake"
    shutil.copytree(demo_lake, lake, ignore=shutil.ignore_patterns("_wal*"))
    con = lakes.connect(str(lake))
    try:
        metrics = con.execute(
            "SELECT DISTINCT path, metric, datatype FROM metric_catalog "
            "WHERE device_id IS NOT NULL ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    entries = [
        f'[[limit]]\nmetric = "{m}"\npath = "{p}"\nexpected_interval_s = 5.0\n'
        for p, m, t in metrics
        if t in NUMERIC and (p, m) != LEFT_OUT
    ]
    assert LEFT_OUT in {(p, m) for p, m, _t in metrics}
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "PQ test"\nversion = "1"\n\n' + "\n".join(entries))
    config, trusted = tmp_path / "uns.toml", tmp_path / "trusted"
    trusted.mkdir()
    config.write_text(
        f'[engine]\nmodel = "{ROOT / "examples" / "pilot-plant.toml"}"\n[batch]\nspec = "{spec}"\n'
        f'[lake]\npath = "{lake}"\n[audit]\ntrusted_keys = "{trusted}"\n'
    )
    return lake, config


def _enrolled(tmp_path: Path, lake: Path, name: str, user_id: str, full_name: str) -> Path:
    """A key of ``user_id`` trusted in the plant's trusted-keys directory (``uns keys trust``,
    recorded in the lake); returns the private key file."""
    from uns.audit.keys import trust_key  # noqa: PLC0415
    from uns.keyring import new_key_pair  # noqa: PLC0415

    private, public = new_key_pair(name, tmp_path / "keys")
    trust_key(lake, public, name=name, full_name=full_name, user_id=user_id, role="QA",
              reason="test", trusted_dir=tmp_path / "trusted")  # fmt: skip
    return private


def _uns(*args: str, cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    if config is not None:
        env["UNS_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "uns", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False, cwd=cwd)  # fmt: skip


def test_pq_on_a_demo_lake_lists_the_metric_missing_from_the_spec(tmp_path: Path, demo_lake: Path) -> None:
    from uns.audit.trail import audit_log, verify_lines  # noqa: PLC0415

    lake, config = _plant(tmp_path, demo_lake)
    before = len(audit_log(str(lake)))
    out = tmp_path / "pq"
    done = _uns(
        "validate", "--pq", "--config", str(config), "--lake", str(lake), "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    evidence = json.loads((out / "validation.json").read_text())
    results = {c["requirement"]: c for c in evidence["checks"]}
    assert list(results) == ["PQ-01", "PQ-02", "PQ-03", "PQ-04", "PQ-05"]
    assert {r for r, c in results.items() if c["result"] == "fail"} == {"PQ-02"}, done.stdout
    assert results["PQ-02"]["evidence"]["uncovered"] == [
        f"{LEFT_OUT[0]} {LEFT_OUT[1]} (Float; no model limits; engLow/engHigh of its birth, if any, apply)"
    ]
    (deviation,) = evidence["deviations"]
    assert deviation["number"] == "D-001" and deviation["requirement"] == "PQ-02"
    assert f"{LEFT_OUT[0]} {LEFT_OUT[1]}" in deviation["observed"]
    assert evidence["summary"] == "4 of 5 passed; 1 deviation (D-001)"
    batch = evidence["pq"]["batches"] or results["PQ-04"]["detail"].split(":", 1)[0]
    assert results["PQ-04"]["evidence"]["content_sha256"]
    assert "1 of 1 passed" not in done.stdout and batch
    schema = json.loads((ROOT / "schemas" / "validation-evidence.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(evidence)
    # sealed, and the seal is the PQ's one entry in the plant's lake
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, check=False)
    assert check.returncode == 0
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    added = audit_log(str(lake), parse_detail=True)[before:]
    assert [(r[1], r[3], r[6], r[7]["result"]) for r in added] == [
        ("uns-cli", "report", "uns validate", "fail")
    ]
    assert verify_lines(str(lake))[0] == 0
    # a named batch that does not exist fails PQ-04 and PQ-05, saying so
    again = _uns("validate", "--pq", "--config", str(config), "--lake", str(lake), "--batch", "NOPE",
                 "--out", str(tmp_path / "pq2"), cwd=tmp_path)  # fmt: skip
    assert again.returncode == 1
    doc = json.loads((tmp_path / "pq2" / "validation.json").read_text())
    failed = {c["requirement"]: c["detail"] for c in doc["checks"] if c["result"] == "fail"}
    assert set(failed) == {"PQ-02", "PQ-04", "PQ-05"} and "NOPE" in failed["PQ-04"]


def test_pq_needs_the_plant_lake_and_a_protocol_names_it(tmp_path: Path, demo_lake: Path) -> None:
    lake, config = _plant(tmp_path, demo_lake)
    refused = _uns("validate", "--pq", "--config", str(config), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "--lake" in refused.stderr
    written = _uns("validate", "--protocol-only", "--pq", "--config", str(config), "--lake", str(lake),
                   "--batch", "B2026-0001", "--out", str(tmp_path / "p"), cwd=tmp_path)  # fmt: skip
    assert written.returncode == 0, written.stderr
    protocol = json.loads((tmp_path / "p" / "protocol.json").read_text())
    schema = json.loads((ROOT / "schemas" / "validation-protocol.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(protocol)
    assert protocol["parts"] == ["pq"] and protocol["pq"] == {"lake": str(lake), "batches": ["B2026-0001"]}
    # approved in the plant's lake, then executed: the evidence lists the approval, verified
    key = _enrolled(tmp_path, lake, "qa-asmith", "asmith", "A. Smith")
    signed = _uns("audit", "sign", str(tmp_path / "p" / "protocol.json"), "--meaning", "approved",
                  "--key", str(key), "--lake", str(lake), cwd=tmp_path, config=config)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(f"signed protocol:{protocol['protocol_sha256']} (approved)")
    done = _uns("validate", "--protocol", str(tmp_path / "p" / "protocol.json"), "--config", str(config),
                "--out", str(tmp_path / "e"), cwd=tmp_path)  # fmt: skip
    evidence = json.loads((tmp_path / "e" / "validation.json").read_text())
    assert evidence["pq"] == {"lake": str(lake), "batches": ["B2026-0001"]}, done.stderr
    (approval,) = evidence["protocol"]["approvals"]["signatures"]
    assert (approval["full_name"], approval["meaning"], approval["verified"]) == (
        "A. Smith",
        "approved",
        True,
    )
    assert (approval["key"], approval["user"]) == ("qa-asmith", "asmith")
    from uns.audit.trail import verify_lines  # noqa: PLC0415

    code, lines = verify_lines(str(lake), str(tmp_path / "trusted"))
    assert code == 0 and "1 digital signature verified" in lines[0], lines
    # another configuration: refused in one line
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("[batch]", "[batch]\nlate_context_s = 9.0"))
    refused = _uns("validate", "--protocol", str(tmp_path / "p" / "protocol.json"), "--config", str(other),
                   "--out", str(tmp_path / "f"), cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 1 and "was written for the configuration with SHA-256" in refused.stderr


def test_audit_review_lists_config_changes_signatures_and_a_lockout(tmp_path: Path, demo_lake: Path) -> None:
    import asyncio  # noqa: PLC0415

    from uns.config_web import WebSection  # noqa: PLC0415
    from uns.engine.daemon import audited  # noqa: PLC0415
    from uns.errors import UnsError  # noqa: PLC0415
    from uns.lake import LakeSink  # noqa: PLC0415
    from uns.users import AccessControl, add_user, cli_store  # noqa: PLC0415

    lake, config = _plant(tmp_path, demo_lake)
    # a configuration change with its reason: the engine started again with another commit interval
    cfg = load_config(str(config), env={}, overrides={"lake.commit_interval": 0.7})

    async def restart() -> None:
        async with audited(LakeSink(lake, cfg.lake), cfg, "CR-7: commit interval 0.7 s"):
            pass

    asyncio.run(restart())
    # a batch signed with an enrolled key; a lockout after failed log-ins to the workspace
    key = _enrolled(tmp_path, lake, "qa-asmith", "asmith", "A. Smith")
    signed = _uns("batch", "sign", "B2026-0001", "--meaning", "approved", "--key", str(key),
                  "--lake", str(lake), "--reason", "released", cwd=tmp_path, config=config)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    web = WebSection(max_failed_logins=3, lockout_s=60.0, password_min_length=12)
    add_user(cli_store(lake), "jdoe", full_name="Jane Doe", roles=["reviewer"],
             password="correct horse battery", web=web)  # fmt: skip
    control = AccessControl(cli_store(lake), web)
    for _ in range(3):
        with pytest.raises(UnsError):
            control.login("jdoe", "wrong password")

    review = tmp_path / "review.json"
    done = _uns("audit", "review", "--since", "2020-01-01", "--lake", str(lake), "--config", str(config),
                "--format", "json", "-o", str(review), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(review.read_text())
    schema = json.loads((ROOT / "schemas" / "audit-review.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    (change,) = doc["configuration_changes"]
    assert change["changes"]["config"]["lake.commit_interval"][1] == 0.7
    assert change["reason"] == "CR-7: commit interval 0.7 s"
    assert "has no reason recorded" not in " ".join(doc["findings"])
    (sig,) = [s for s in doc["signatures"] if s["subject"] == "B2026-0001"]
    assert (sig["user"], sig["user_id"], sig["meaning"], sig["key"], sig["reason"], sig["verified"]) == (
        "A. Smith", "asmith", "approved", "qa-asmith", "released", True
    )  # fmt: skip
    assert next(b for b in doc["batches"] if b["batch_id"] == "B2026-0001")["signed"]
    people = doc["people_and_keys"]
    (locked,) = people["lockouts"]
    assert locked["subject"] == "jdoe" and people["users_recorded"] and people["keys_recorded"]
    assert people["failed_logins"] == 3
    kinds = [e["kind"] for e in people["entries"]]
    assert kinds == ["key_trusted", "user_added", "password_set", *["login_failed"] * 3, "lockout"], kinds
    assert "account jdoe locked out" in " ".join(doc["findings"])
    assert doc["audit_verify"]["intact"], doc["audit_verify"]
    assert doc["engine_running"]["writers"]["(default)"]["starts"] == 2
    assert {b["batch_id"] for b in doc["batches"]} >= {"B2026-0001", "B2026-0002"}
    assert all(isinstance(b["exceptions"], dict) for b in doc["batches"])

    # the HTML lists each; the review is a report of the lake, and a reviewer signs it
    html = tmp_path / "review.html"
    assert _uns("audit", "review", "--since", "2020-01-01", "--lake", str(lake), "--config", str(config),
                "-o", str(html), cwd=tmp_path).returncode == 0  # fmt: skip
    text = html.read_text()
    assert "lake.commit_interval" in text and "CR-7: commit interval 0.7 s" in text
    assert "lockout" in text and "jdoe" in text and "A. Smith" in text and "qa-asmith" in text
    from uns.audit.trail import audit_log  # noqa: PLC0415

    assert [r[6] for r in audit_log(str(lake), kind="report")][-2:] == ["periodic review"] * 2
    reviewer = _enrolled(tmp_path, lake, "qa-qreviewer", "qreviewer", "Q. Reviewer")
    sign = _uns("audit", "sign", str(review), "--meaning", "reviewed", "--key", str(reviewer),
                "--lake", str(lake), cwd=tmp_path, config=config)  # fmt: skip
    assert sign.returncode == 0, sign.stderr
    assert f"review:{doc['content_sha256']}" in sign.stdout
    review.write_text(review.read_text().replace('"failed_logins": 3', '"failed_logins": 0'))
    changed = _uns("audit", "sign", str(review), "--meaning", "reviewed", "--key", str(reviewer),
                   "--lake", str(lake), cwd=tmp_path, config=config)  # fmt: skip
    assert changed.returncode == 1 and "does not match its content" in changed.stderr


def test_the_pq_benchmark_runs_at_a_tiny_scale(tmp_path: Path) -> None:
    """bash scripts/bench pq, at 12 batches: the lake it builds verifies and passes the PQ."""
    from benchmarks.bench_pq import main  # noqa: PLC0415

    assert main(["--batches", "12", "--keep", str(tmp_path / "bench")]) == 0
    evidence = json.loads((tmp_path / "bench" / "pq" / "validation.json").read_text())
    assert evidence["summary"] == "5 of 5 passed"


def test_pq_checks_the_anchors_when_the_plant_configures_them(tmp_path: Path, demo_lake: Path) -> None:
    """With audit.anchor set, PQ-03 verifies the chains against the anchor store: a head
    anchored beyond the lake's chain (the lake was cut back since) fails it, naming it."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    from uns.lake.anchors import anchor_body, anchor_name, open_store  # noqa: PLC0415

    lake, config = _plant(tmp_path, demo_lake)
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    config.write_text(config.read_text() + f'anchor = "{anchors}"\n')
    body = anchor_body("uns-cli", 999_999, "0" * 64, time.time_ns() // 1000, socket.gethostname(), str(lake))
    open_store(str(anchors)).put(anchor_name("uns-cli", 999_999), body)
    out = tmp_path / "pq"
    done = _uns(
        "validate", "--pq", "--config", str(config), "--lake", str(lake), "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    results = {c["requirement"]: c for c in json.loads((out / "validation.json").read_text())["checks"]}
    assert results["PQ-03"]["result"] == "fail"
    assert "999999" in results["PQ-03"]["detail"], results["PQ-03"]["detail"]
