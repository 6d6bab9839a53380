"""`uns validate` (issue 18): IQ and OQ on a fresh install of the wheel, evidence that
names each requirement, and failures that name the requirement broken on purpose."""

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

from uns.errors import UnsError
from uns.validation.checks import REQUIREMENTS, Check, run_check
from uns.validation.iq import check_own_files
from uns.validation.oq import Operation
from uns.validation.oq_checks import CHECKS

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
    assert check.to_dict()["text"] == REQUIREMENTS["OQ-09"][0]


def test_every_requirement_has_one_check_and_is_in_the_traceability_matrix() -> None:
    from uns.validation.iq import iq_checks  # noqa: PLC0415

    matrix = (ROOT / "docs" / "gxp.md").read_text()
    oq = [req for req, _fn in CHECKS]
    iq = [c.requirement for c in iq_checks()]
    assert sorted(iq + oq) == sorted(REQUIREMENTS)
    for req in REQUIREMENTS:
        assert f"| {req} |" in matrix, f"{req} is not in docs/gxp.md's traceability matrix"


def test_an_editable_install_cannot_be_qualified() -> None:
    """The shared development venv installs uns editable: IQ-04 says so and what to do."""
    check = check_own_files()
    assert not check.passed
    assert "editable install" in check.detail or "not an installed file of uns" in check.detail


def test_an_unreachable_broker_fails_every_oq_requirement_saying_why(tmp_path: Path) -> None:
    from uns.validation.run import run_validation  # noqa: PLC0415

    lines: list[str] = []
    code = run_validation(tmp_path / "out", broker="mqtt://127.0.0.1:1", only="oq", echo=lines.append)
    assert code == 1
    doc = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert [c["requirement"] for c in doc["checks"]] == [r for r in REQUIREMENTS if r.startswith("OQ")]
    assert all(c["result"] == "fail" and "the OQ run stopped" in c["detail"] for c in doc["checks"])
    assert doc["environment"]["broker"] == "mqtt://127.0.0.1:1"
    assert lines[-1].startswith("uns validate: FAILED: OQ-01, OQ-02")
    with pytest.raises(UnsError, match="not empty"):
        run_validation(tmp_path / "out", only="iq")


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


@pytest.mark.integration
@pytest.mark.slow
def test_validate_passes_on_a_fresh_install_and_files_its_evidence(venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "evidence"
    done = _validate(venv, "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = _evidence(out)
    assert doc["result"] == "pass" and doc["seconds"] < 300
    assert [c["requirement"] for c in doc["checks"]] == list(REQUIREMENTS)
    assert {c["result"] for c in doc["checks"]} == {"pass"}
    assert doc["environment"]["uns_location"].startswith(str(venv))
    # every artifact is listed with its SHA-256, and SHA256SUMS covers the evidence itself
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert {"validation.json", "validation.html", "validation.pdf", "oq/engine.log"} <= set(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    assert {a["file"] for a in doc["artifacts"]} <= set(sums)
    assert (out / "validation.pdf").read_bytes().startswith(b"%PDF")
    assert not (out / "oq" / "keys").exists()  # no private key is left in the evidence
    _html_in_a_browser(out / "validation.html")

    # a broken lake: one of its data files deleted, the audit check fails naming it
    broken = tmp_path / "broken"
    shutil.copytree(out / "oq", broken)
    op = Operation(broken, "mqtt://unused", doc["oq_namespace"]["tag"], True)
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
            assert page.inner_text("#result").startswith("Result: PASS")
            rows = page.locator("#checks tbody tr").count()
            assert rows == len(REQUIREMENTS)
            assert page.inner_text("#OQ-08 td.pass") == "PASS"
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
    assert "FAILED: IQ-04" in done.stdout
    results = {c["requirement"]: c for c in _evidence(out)["checks"]}
    assert results["IQ-04"]["result"] == "fail"
    assert (
        "uns/core/signing.py: changed since installation (SHA-256 differs from RECORD)"
        in results["IQ-04"]["detail"]
    )
    assert {r for r, c in results.items() if c["result"] == "fail"} == {"IQ-04"}
    assert _evidence(out)["requirements_not_run"] == [r for r in REQUIREMENTS if r.startswith("OQ")]
    # the untouched installation passes the same IQ
    again = _validate(venv, "--out", str(tmp_path / "again"), "--only", "iq")
    assert again.returncode == 0, again.stdout
