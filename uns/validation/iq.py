"""Installation qualification: is uns installed as specified, here (``uns validate``, IQ-01..07).

The installed files are compared with what the installer recorded: each
distribution's ``RECORD`` (in its ``.dist-info``) lists every file with its SHA-256,
as the wheel carried it.  A file changed, truncated or removed after installation
fails IQ-04 (uns) or IQ-05 (a dependency), naming it.  An *editable* install (``pip
install -e``: the code is a working checkout) has no record of its source files and
cannot be qualified: install the wheel.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import platform
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Final

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

import uns
from uns.validation.checks import Check, run_check, seen

__all__ = ["DISTRIBUTION", "iq_checks", "runtime_closure"]

DISTRIBUTION: Final = "uns"
_OWN_MODULES: Final = ("uns",)
_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def _requirements(dist: md.Distribution) -> list[Requirement]:
    """The runtime requirements of ``dist`` that apply here (no extras)."""
    env: dict[str, str] = {**default_environment(), "extra": ""}  # type: ignore[dict-item]
    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate(env):
            out.append(req)
    return out


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def runtime_closure(dist: md.Distribution) -> tuple[dict[str, md.Distribution], list[str]]:
    """Every distribution ``dist`` needs at run time, by normalized name (recursively),
    and the requirements found missing or in a version they do not allow."""
    found: dict[str, md.Distribution] = {}
    problems: list[str] = []
    todo = [(req, dist.metadata["Name"]) for req in _requirements(dist)]
    while todo:
        req, wanted_by = todo.pop()
        key = _key(req.name)
        if key in found:
            continue
        try:
            dep = md.distribution(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{req} (needed by {wanted_by}) is not installed")
            continue
        if req.specifier and not req.specifier.contains(dep.version, prereleases=True):
            problems.append(f"{req.name} {dep.version} is installed; {wanted_by} needs {req}")
        found[key] = dep
        todo.extend((sub, dep.metadata["Name"]) for sub in _requirements(dep))
    return dict(sorted(found.items())), problems


def _record_findings(dist: md.Distribution) -> tuple[int, int, list[str]]:
    """(files checked, bytes, findings) of a distribution's RECORD against its files."""
    checked = size = 0
    findings: list[str] = []
    for file in dist.files or []:
        if file.hash is None:  # RECORD itself, compiled bytecode
            continue
        path = Path(str(file.locate()))
        try:
            data = path.read_bytes()
        except OSError:
            findings.append(f"{file}: missing")
            continue
        if file.hash.mode != "sha256":
            findings.append(f"{file}: recorded with {file.hash.mode}, not sha256")
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != file.hash.value:
            findings.append(f"{file}: changed since installation (SHA-256 differs from RECORD)")
        checked += 1
        size += len(data)
    return checked, size, findings


def _editable(dist: md.Distribution) -> str | None:
    """The source directory of an editable install, None for a real one.  Metadata without
    a RECORD is a source checkout's ``uns.egg-info`` (``pip install -e`` writes it beside the
    code, and a process started in the checkout finds it first): editable too."""
    if dist.read_text("RECORD") is None:  # no installer wrote it: uns.egg-info of a checkout
        return Path(str(dist.locate_file(""))).as_uri()
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("dir_info", {}).get("editable"):
        return str(doc.get("url", "?"))
    return None


def _uns() -> md.Distribution:
    return md.distribution(DISTRIBUTION)


def check_python() -> Check:
    impl = platform.python_implementation()
    ok = sys.version_info >= (3, 11) and impl == "CPython"
    version = platform.python_version()
    evidence = {"version": version, "implementation": impl, "executable": sys.executable}
    what = f"{impl} {version} at {sys.executable}"
    return Check("IQ-01", what, {"python": seen(ok, f"{impl} {version}")}, evidence)


def check_version() -> Check:
    dist = _uns()
    ok = dist.version == uns.__version__
    detail = f"distribution uns {dist.version}, running code uns {uns.__version__}"
    evidence = {"installed": dist.version, "running": uns.__version__}
    return Check("IQ-02", detail, {"version": seen(ok, detail)}, evidence)


def check_dependencies() -> Check:
    found, problems = runtime_closure(_uns())
    versions = {dep.metadata["Name"]: dep.version for dep in found.values()}
    detail = "; ".join(problems) if problems else f"{len(found)} distributions, each in an allowed version"
    return Check("IQ-03", detail, {"closure": seen(not problems, detail)}, {"distributions": versions})


def _listed(findings: list[str]) -> str:
    return "; ".join(findings[:20]) + (f" (and {len(findings) - 20} more)" if len(findings) > 20 else "")


def check_own_files() -> Check:
    dist = _uns()
    source = _editable(dist)
    if source is not None:
        why = (
            f"an editable install of {source}: its source files have no record and cannot be "
            "qualified; install the wheel (pip install uns-<version>-py3-none-any.whl)"
        )
        skipped = seen(False, "not checked: an editable install has no RECORD of its source files")
        return Check("IQ-04", why, {"wheel": seen(False, why), "record": skipped, "modules": skipped})
    checked, size, findings = _record_findings(dist)
    recorded = {Path(str(f.locate())).resolve() for f in dist.files or []}
    strays: list[str] = []
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] not in _OWN_MODULES or getattr(module, "__file__", None) is None:
            continue
        where = Path(str(module.__file__)).resolve()
        if where not in recorded:
            strays.append(f"module {name} runs from {where}, which is not an installed file of uns")
    evidence = {"files": checked, "bytes": size, "location": str(dist.locate_file(""))}
    observed = {
        "wheel": seen(True, f"wheel install at {dist.locate_file('')}"),
        "record": seen(not findings, _listed(findings) or f"{checked} files match RECORD ({size} bytes)"),
        "modules": seen(not strays, _listed(strays) or "every loaded uns module is an installed file"),
    }
    detail = _listed(findings + strays) or f"{checked} files match RECORD ({size} bytes)"
    return Check("IQ-04", detail, observed, evidence)


def check_dependency_files() -> Check:
    found, _problems = runtime_closure(_uns())
    files = size = 0
    findings: list[str] = []
    for dep in found.values():
        checked, nbytes, wrong = _record_findings(dep)
        files += checked
        size += nbytes
        findings.extend(f"{dep.metadata['Name']} {dep.version}: {w}" for w in wrong)
    detail = _listed(findings) or f"{files} files of {len(found)} distributions match their RECORD"
    return Check("IQ-05", detail, {"record": seen(not findings, detail)}, {"files": files, "bytes": size})


def check_schemas() -> Check:
    from uns.config_schema import config_json_schema  # noqa: PLC0415

    folder = resources.files("uns.validation").joinpath("schemas")
    findings: list[str] = []
    hashes: dict[str, str] = {}
    config_same: bool | None = None
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        data = entry.read_bytes()
        hashes[entry.name] = hashlib.sha256(data).hexdigest()
        if not entry.name.endswith(".json"):
            continue
        try:
            doc: Any = json.loads(data)
        except ValueError as exc:
            findings.append(f"{entry.name}: not JSON ({exc})")
            continue
        if not isinstance(doc, dict) or doc.get("$schema") != _SCHEMA_DIALECT or "$id" not in doc:
            findings.append(f"{entry.name}: not a JSON Schema 2020-12 document with an $id")
        elif entry.name == "config.schema.json":
            config_same = doc == config_json_schema()
    if not hashes:
        findings.append("no schemas installed (uns/validation/schemas)")
    config_said = {
        None: "config.schema.json is not installed",
        True: "config.schema.json equals the running code's schema",
        False: "config.schema.json differs from the schema of the running code's config",
    }[config_same]
    observed = {
        "schemas": seen(not findings, "; ".join(findings) or f"{len(hashes)} schema files, each well-formed"),
        "config": seen(config_same is True, config_said),
    }
    detail = "; ".join(findings + ([] if config_same else [config_said])) or f"{len(hashes)} schema files"
    return Check("IQ-06", detail, observed, {"sha256": hashes})


def check_config(config_file: str | None = None) -> Check:
    from uns.config import load_config  # noqa: PLC0415
    from uns.keyring import load_trusted_keys  # noqa: PLC0415
    from uns.validation.protocol import config_sha256  # noqa: PLC0415

    config = load_config(config_file)
    sha = config_sha256(config)
    trusted = load_trusted_keys(config.audit.trusted_keys)
    required = config.context.require_signature
    where = config.audit.trusted_keys or "audit.trusted_keys not set"
    keys_said = f"{len(trusted)} trusted key{'s' if len(trusted) != 1 else ''} in {where}" + (
        "; context.require_signature is true" if required else "; signatures are not required"
    )
    observed = {
        "load": seen(True, f"loaded{f' from {config_file}' if config_file else ''}; SHA-256 {sha}"),
        "keys": seen(not required or bool(trusted), keys_said),
    }
    evidence = {"config": config.to_dict(), "config_sha256": sha, "trusted_keys": sorted(trusted)}
    return Check("IQ-07", f"configuration loaded; {keys_said}", observed, evidence)


def iq_checks(config_file: str | None = None) -> list[Check]:
    """Every installation check, in requirement order (``config_file``: the configuration
    to qualify; default: the effective one, UNS_CONFIG and UNS_* variables)."""
    steps = (
        ("IQ-01", check_python),
        ("IQ-02", check_version),
        ("IQ-03", check_dependencies),
        ("IQ-04", check_own_files),
        ("IQ-05", check_dependency_files),
        ("IQ-06", check_schemas),
        ("IQ-07", lambda: check_config(config_file)),
    )
    return [run_check(req, fn) for req, fn in steps]
