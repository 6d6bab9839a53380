"""Every Sparkplug TCK host assertion has a test, and docs/sparkplug.md's table says which.

The ids are those of ``tests/tck_host_ids.txt`` (and of ``../shared/SPARKPLUG-TCK.md``,
the list they were taken from, where it is beside the checkout); the tests mark the ids
they show with :func:`tests.conformance.tck`.  The table between the ``conformance``
markers of docs/sparkplug.md is generated from those marks:

    .venv/bin/python -m tests.test_conformance_table     # rewrite the table
"""

from __future__ import annotations

import re
import sys

from tests import test_tck_brokers, test_tck_commands, test_tck_edge, test_tck_session
from tests.conformance import REGISTRY, ROOT, tck_ids

MODULES = (test_tck_session, test_tck_edge, test_tck_brokers, test_tck_commands)  # they fill REGISTRY
DOC = ROOT / "docs" / "sparkplug.md"
BEGIN, END = (
    "<!-- conformance:begin (generated: python -m tests.test_conformance_table) -->",
    "<!-- conformance:end -->",
)
_CLASSES = {
    "Passive": "checked passively by the TCK's monitor",
    "Must": "a MUST the TCK cannot test",
}


def render() -> str:
    """The conformance table: one row per id, in the TCK list's order."""
    rows = ["| TCK test | id (`tck-id-...`) | what uns does | shown by |", "|---|---|---|---|"]
    for ident, section in tck_ids().items():
        shown = REGISTRY.get(ident, [])
        does = "; ".join(dict.fromkeys(s.does for s in shown)) or "**no test**"
        tests = ", ".join(f"`tests/{s.test}`" for s in dict.fromkeys(shown)) or "**none**"
        rows.append(f"| {_CLASSES.get(section, section)} | `{ident}` | {does} | {tests} |")
    return "\n".join(rows)


def _section(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def test_every_tck_host_id_has_a_test() -> None:
    ids = tck_ids()
    missing = [i for i in ids if i not in REGISTRY]
    assert not missing, f"TCK ids without a test: {missing}"
    unknown = [i for i in REGISTRY if i not in ids]
    assert not unknown, f"tests name ids the TCK list does not have: {unknown}"
    assert len([i for i, s in ids.items() if s not in _CLASSES]) == 89  # the six host test classes


def test_the_id_list_is_the_shared_one() -> None:
    """``tests/tck_host_ids.txt`` holds every id of the shared SPARKPLUG-TCK.md (when it is there)."""
    shared = ROOT.parent / "shared" / "SPARKPLUG-TCK.md"
    if not shared.exists():
        return  # a checkout on its own: the committed list is the reference
    listed = set(re.findall(r"^- `([a-z0-9-]+)`", shared.read_text(), flags=re.M))
    assert listed <= set(tck_ids()), (
        f"ids in SPARKPLUG-TCK.md but not here: {sorted(listed - set(tck_ids()))}"
    )


def test_the_docs_table_is_generated_from_the_tests() -> None:
    assert _section(DOC.read_text()) == render(), "regenerate: python -m tests.test_conformance_table"


def main() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render() + "\n" + text[end:])
    print(f"wrote {len(tck_ids())} rows to {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
