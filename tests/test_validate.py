"""`uns validate` (issues 18, 30): a protocol, then its execution on a fresh install of the
wheel; evidence that names each requirement and step, expected against actual; failures
as numbered deviations with what was observed; every file of the evidence sealed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from uns.config import load_config
from uns.errors import UnsError
from uns.validation.checks import REQUIREMENTS, Check, Observed, run_check
from uns.validation.evidence import deviations, summary
from uns.validation.iq import check_config, check_own_files
from uns.validation.oq import Operation
from uns.validation.oq_checks import CHECKS
from uns.validation.run import ValidationRequest, run_validation

ROOT = Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "__pycache__", ".*_cache", ".hypothesis"
)


# ------------------------------------------------------------------ pure


def test_a_check_that_breaks_fails_its_requirement_with_the_error() -> None:
    def broken() -> Check:
        raise OSError("disk gone")

    check = run_check("OQ-09", broken)
    assert (check.requirement, check.passed) == ("OQ-09", False)
    assert check.detail.startswith("OSError: disk gone (at test_validate.py:")
    done = check.to_dict()
    assert done["text"] == REQUIREMENTS["OQ-09"].text
    assert [(s["result"], s["actual"]) for s in done["steps"]] == [("fail", check.detail)]


def test_a_failed_step_is_a_numbered_deviation_with_what_was_observed() -> None:
    """A step not observed fails too; the summary counts requirements, not steps."""
    ok = Check("OQ-03", "seen", {"recorded": Observed(True, "1 seq_gap event")})
    bad = Check(
        "OQ-08", "x", {"kill": Observed(False, "exit codes [-9, 1, 0]"), "samples": Observed(True, "0")}
    )
    executed = [ok.to_dict(), bad.to_dict()]
    assert [s["result"] for s in executed[1]["steps"]] == ["fail", "fail", "pass"]
    found = deviations(executed)
    assert found == [
        {"number": "D-001", "requirement": "OQ-08", "step": 1, "step_id": "kill",
         "expected": "Exit codes -9, 0, 0", "observed": "exit codes [-9, 1, 0]"},
        {"number": "D-002", "requirement": "OQ-08", "step": 2, "step_id": "context",
         "expected": "0 missing, 0 stored twice", "observed": "not observed"},
    ]  # fmt: skip
    assert summary(executed, found) == "1 of 2 passed; 2 deviations (D-001..D-002)"
    assert summary(executed[:1], []) == "1 of 1 passed"
    # an action step is done, not judged
    assert executed[0]["steps"][0] == {
        "n": 1, "id": "skip", "action": REQUIREMENTS["OQ-03"].steps[0].action, "expected": None,
        "actual": "", "result": "done",
    }  # fmt: skip


def test_iq07_fails_without_a_trusted_key_when_signatures_are_required(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    config = tmp_path / "uns.toml"
    config.write_text(f'[context]\nrequire_signature = true\n[audit]\ntrusted_keys = "{keys}"\n')
    check = run_check("IQ-07", lambda: check_config(str(config)))
    assert not check.passed
    assert check.observed["load"].passed
    assert check.observed["keys"].actual.startswith(f"0 trusted keys in {keys}; context.require_signature")
    (keys / "qa.pub").write_text("not a key")  # unreadable keys are an error, not a key
    assert not run_check("IQ-07", lambda: check_config(str(config))).passed
    from uns.keyring import new_key_pair  # noqa: PLC0415

    (keys / "qa.pub").unlink()
    _private, public = new_key_pair("qa", tmp_path / "private")
    shutil.copyfile(public, keys / "qa.pub")  # trusted for signed context (docs/gxp.md section 7)
    assert run_check("IQ-07", lambda: check_config(str(config))).passed
    config.write_text("[context]\nrequire_signature = false\n")
    assert run_check("IQ-07", lambda: check_config(str(config))).passed


def test_every_requirement_has_one_check_and_is_in_the_traceability_matrix() -> None:
    from uns.validation.iq import iq_checks  # noqa: PLC0415

    matrix = (ROOT / "docs" / "gxp.md").read_text()
    from uns.validation.pq import pq_checks  # noqa: PLC0415

    oq = [req for req, _fn in CHECKS]
    iq = [c.requirement for c in iq_checks()]
    pq = [c.requirement for c in pq_checks(load_config(env={}), str(ROOT / "no-such-lake"))]
    assert sorted(iq + oq + pq) == sorted(REQUIREMENTS)
    for req in REQUIREMENTS:
        assert f"| {req} |" in matrix, f"{req} is not in docs/gxp.md's traceability matrix"


def test_the_traceability_matrix_states_each_requirement_and_regulation_as_the_code_does() -> None:
    """docs/gxp.md section 8: one row per requirement, its text and regulation word for word
    those of requirements.toml (so a clause named is the clause the requirement addresses),
    and every judged step has an expected result the protocol prints."""
    text = (ROOT / "docs" / "gxp.md").read_text()
    rows = {}
    for line in text[text.index("### Traceability matrix") :].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[0] in REQUIREMENTS:
            rows[cells[0]] = cells
    assert list(rows) == list(REQUIREMENTS)
    for req, (_id, what, regulation, _check, tests) in rows.items():
        assert what.replace("\\|", "|") == REQUIREMENTS[req].text, req
        assert regulation == REQUIREMENTS[req].regulation, req
        assert tests and tests != "—", req
    for req in REQUIREMENTS.values():
        assert req.judged, f"{req.id} has no step with an expected result"
        assert len({s.id for s in req.steps}) == len(req.steps), f"{req.id}: step ids repeat"


def test_an_editable_install_cannot_be_qualified() -> None:
    """The shared development venv installs uns editable: IQ-04 says so and what to do."""
    check = check_own_files()
    assert not check.passed
    assert "editable install" in check.detail or "not an installed file of uns" in check.detail


def test_an_unreachable_broker_fails_every_oq_requirement_saying_why(tmp_path: Path) -> None:

    lines: list[str] = []
    request = ValidationRequest(tmp_path / "out", ("oq",), broker="mqtt://127.0.0.1:1")
    code = run_validation(request, echo=lines.append)
    assert code == 1
    doc = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert [c["requirement"] for c in doc["checks"]] == [r for r in REQUIREMENTS if r.startswith("OQ")]
    assert all(c["result"] == "fail" and "the OQ run stopped" in c["detail"] for c in doc["checks"])
    assert all("the OQ run stopped" in d["observed"] for d in doc["deviations"])
    assert doc["environment"]["broker"] == "mqtt://127.0.0.1:1"
    assert doc["summary"].startswith("0 of 12 passed; ")
    assert lines[-2].startswith("uns validate: FAIL, 0 of 12 passed")
    with pytest.raises(UnsError, match="not empty"):
        run_validation(ValidationRequest(tmp_path / "out", ("iq",)))


# ------------------------------------------------------------------ a fresh install


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel of this checkout installed; its dependencies are
    the shared venv's, reached through a .pth file added *after* the install (so pip,
    installing into the fresh venv, never sees -- and never replaces -- the shared
    venv's own uns)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]

    def run(*argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=base)
        assert done.returncode == 0, done.stderr

    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src))
    (wheel,) = (base / "dist").glob("uns-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", str(base / "venv"))
    python = base / "venv" / "bin" / "python"
    run(*pip, "--python", str(python), "install", "--no-deps", "--no-compile", str(wheel))
    (site,) = (base / "venv" / "lib").glob("python3*/site-packages")
    shared = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz-shared-dependencies.pth").write_text("\n".join(shared) + "\n")
    return base / "venv"


@pytest.mark.integration
def test_the_wheel_installs_one_import_package_and_the_command(venv: Path) -> None:
    """One package (issue 26): ``uns`` and the ``uns`` command, no ``lake``, ``cli`` or ``uns_cli``;
    the lake's declarative definition and the report templates ship inside it."""
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (record,) = site.glob("uns-*.dist-info/RECORD")
    tops = {line.split("/", 1)[0].split(",", 1)[0] for line in record.read_text().splitlines()}
    assert {t for t in tops if not t.endswith(".dist-info") and t != ".."} == {"uns"}
    assert (venv / "bin" / "uns").exists()
    assert (site / "uns" / "lake" / "definition" / "tables.toml").is_file()
    assert (site / "uns" / "lake" / "definition" / "views" / "measurements_asof.sql").is_file()
    assert (site / "uns" / "batch" / "templates" / "batch_report.html.j2").is_file()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name in ("lake", "cli", "uns_cli"):
        probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is not None)"
        done = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", probe], env=env, check=False)
        assert done.returncode == 0, f"{name} is importable from the wheel install"


def _validate(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_") and k != "PYTHONPATH"}
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "uns", "validate", *args], capture_output=True, text=True,
        env=env, timeout=300, check=False, cwd=venv.parent,
    )  # fmt: skip


def _evidence(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "validation.json").read_text())
    return doc


def _sealed(out: Path) -> dict[str, str]:
    """SHA256SUMS as {file: sha256}, after checking it with sha256sum -c and that it lists
    every file of the folder but itself and the seal entry's own two files (the audit
    table's Parquet file and Delta log entry written after it, when the seal went into
    the OQ's lake)."""
    done = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    unlisted = present - set(sums)
    assert all(name.startswith("oq/lake/audit/") for name in unlisted), unlisted
    assert len(unlisted) <= 2, unlisted
    return sums


@pytest.mark.integration
@pytest.mark.slow
def test_protocol_then_execution_on_a_wheel_install(venv: Path, tmp_path: Path) -> None:
    """The protocol written first, refused once tampered with, executed as written: every
    requirement passes, the evidence is sealed and the seal is in the OQ's lake."""
    protocol_dir = tmp_path / "protocol"
    written = _validate(venv, "--protocol-only", "--out", str(protocol_dir))
    assert written.returncode == 0, written.stdout + written.stderr
    protocol_file = protocol_dir / "protocol.json"
    protocol = json.loads(protocol_file.read_text())
    assert f"protocol SHA-256: {protocol['protocol_sha256']}" in written.stdout
    assert [r["id"] for r in protocol["requirements"]] == [r for r in REQUIREMENTS if r[:2] in ("IQ", "OQ")]
    assert all(r["acceptance"] and r["steps"] for r in protocol["requirements"])
    assert (protocol_dir / "protocol.pdf").read_bytes().startswith(b"%PDF")
    _sealed(protocol_dir)

    # a changed expected result: refused in one line, nothing run
    tampered = tmp_path / "tampered.json"
    doc = json.loads(protocol_file.read_text())
    doc["requirements"][7]["steps"][1]["expected"] = "at most 100 samples missing"
    tampered.write_text(json.dumps(doc))
    refused = _validate(venv, "--protocol", str(tampered), "--out", str(tmp_path / "no"))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "SHA-256 does not match its content" in refused.stderr
    assert not (tmp_path / "no").exists()
    # another version's protocol, even with its hash made to match: refused
    from uns.validation.protocol import content_sha256  # noqa: PLC0415

    doc = json.loads(protocol_file.read_text())
    doc["uns_version"] = "0.0.1"
    doc["protocol_sha256"] = content_sha256(doc)
    tampered.write_text(json.dumps(doc))
    refused = _validate(venv, "--protocol", str(tampered), "--out", str(tmp_path / "no"))
    assert refused.returncode == 1 and "is a protocol of uns 0.0.1" in refused.stderr

    out = tmp_path / "evidence"
    done = _validate(venv, "--protocol", str(protocol_file), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = _evidence(out)
    assert result["result"] == "pass" and result["seconds"] < 300
    assert result["summary"] == "19 of 19 passed" and result["deviations"] == []
    assert result["protocol"]["sha256"] == protocol["protocol_sha256"] and result["protocol"]["given"]
    assert (out / "protocol.json").read_bytes() == protocol_file.read_bytes()
    assert [c["requirement"] for c in result["checks"]] == [r["id"] for r in protocol["requirements"]]
    for check, req in zip(result["checks"], protocol["requirements"], strict=True):
        assert [s["expected"] for s in check["steps"]] == [s["expected"] for s in req["steps"]]
        assert {s["result"] for s in check["steps"]} <= {"pass", "done"}
    ingest = next(c for c in result["checks"] if c["requirement"] == "OQ-01")["evidence"]
    assert ingest["missing"] == 0 and ingest["twice"] == 0 and ingest["unsent"] == 0
    assert ingest["stored"] + ingest["tolerated"] == ingest["sent"] > 1000
    env = result["environment"]
    assert env["uns_location"].startswith(str(venv))
    assert env["mosquitto"].startswith("mosquitto version") and env["chromium"].startswith("Chromium")
    assert env["playwright"] != "not installed" and "synchronized" in env["time_sync"]
    assert len(env["config_sha256"]) == 64 and env["kernel"].startswith("Linux")
    assert "duckdb" in env["dependencies"]

    # sealed: every file listed, sha256sum -c clean, the seal's hash in the OQ lake's trail
    sums = _sealed(out)
    assert {"protocol.json", "validation.json", "validation.html", "validation.pdf", "oq/engine.log"} <= set(
        sums
    )
    assert sum(1 for name in sums if name.startswith("oq/lake/")) > 50
    seal = hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"SHA256SUMS ({len(sums)} files) SHA-256: {seal}; recorded in " in done.stdout
    from uns.audit.trail import audit_log  # noqa: PLC0415

    (entry,) = audit_log(str(out / "oq" / "lake"), kind="report", parse_detail=True)[-1:]
    assert (entry[6], entry[7]["sha256"], entry[7]["result"]) == ("uns validate", seal, "pass")
    assert (out / "validation.pdf").read_bytes().startswith(b"%PDF")
    assert not (out / "oq" / "keys").exists()  # no private key is left in the evidence
    _html_in_a_browser(out / "validation.html")

    # a broken lake: one of its data files deleted, the audit check fails naming it
    broken = tmp_path / "broken"
    shutil.copytree(out / "oq", broken)
    op = Operation(broken, "mqtt://unused", result["oq_namespace"]["tag"], True)
    victim = sorted((op.lake / "context").rglob("*.parquet"))[0]
    victim.unlink()
    check = run_check("OQ-09", partial(dict(CHECKS)["OQ-09"], op))
    assert not check.passed and victim.name in check.detail and "data file missing" in check.detail


def _html_in_a_browser(page_file: Path) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    from uns.pdf import CHROMIUM_ARGS, find_chromium  # noqa: PLC0415

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            assert page.inner_text("#result") == "Result: PASS — 19 of 19 passed"
            rows = page.locator("#checks tbody tr").count()
            assert rows == len([r for r in REQUIREMENTS if not r.startswith("PQ")])
            assert page.inner_text("#OQ-08 td.pass") == "PASS"
            assert page.inner_text("#deviations").startswith("No deviation")
            step = page.locator("[id='OQ-01.3'] td").all_inner_texts()
            assert step[2:] == ["0 samples stored twice", "0 samples stored more than once", "PASS"]
        finally:
            browser.close()


@pytest.mark.integration
def test_an_installed_file_changed_fails_iq04_naming_it(venv: Path, tmp_path: Path) -> None:
    """On a copy of the fresh venv (never the shared one): one line more in a module."""
    copy = tmp_path / "venv"
    shutil.copytree(venv, copy, symlinks=True)
    (changed,) = (copy / "lib").glob("python3*/site-packages/uns/core/signing.py")
    changed.write_text(changed.read_text() + "# changed after installation\n")
    out = tmp_path / "evidence"
    done = _validate(copy, "--out", str(out), "--only", "iq")
    assert done.returncode == 1
    assert "uns validate: FAIL, 6 of 7 passed; 1 deviation (D-001)" in done.stdout
    results = {c["requirement"]: c for c in _evidence(out)["checks"]}
    assert results["IQ-04"]["result"] == "fail"
    assert (
        "uns/core/signing.py: changed since installation (SHA-256 differs from RECORD)"
        in results["IQ-04"]["detail"]
    )
    assert {r for r, c in results.items() if c["result"] == "fail"} == {"IQ-04"}
    evidence = _evidence(out)
    assert evidence["requirements_not_in_protocol"] == [r for r in REQUIREMENTS if r[:2] in ("OQ", "PQ")]
    # the injected failure is deviation D-001, with what was observed
    (deviation,) = evidence["deviations"]
    assert deviation["number"] == "D-001" and (deviation["requirement"], deviation["step"]) == ("IQ-04", 2)
    assert deviation["expected"] == "Every file matches its RECORD entry"
    assert "uns/core/signing.py: changed since installation" in deviation["observed"]
    assert evidence["summary"] == "6 of 7 passed; 1 deviation (D-001)"
    assert "D-001 IQ-04 step 2: expected Every file matches its RECORD entry; observed " in done.stdout
    assert "not recorded (no lake: pass --lake to record the seal)" in done.stdout
    _sealed(out)
    # the untouched installation passes the same IQ
    again = _validate(venv, "--out", str(tmp_path / "again"), "--only", "iq")
    assert again.returncode == 0, again.stdout
