"""Batch history from an ISA-88 export: a B2MML/BatchML ``BatchInformation`` document as
context events (``uns context import FILE.xml``; docs/batches.md section 9).

Each ``BatchListEntry`` (nested in another or listed flat, in any namespace) with an
``ActualStartTime`` becomes context on the path its equipment maps to through the plant
model (``ActualEquipmentID``, else ``EquipmentID``, else its parent entry's equipment;
:meth:`uns.core.model.PlantModel.equipment_path`):

- on each unit a batch ran on (its ``UnitProcedure`` entries; a batch without any: the
  ``Batch`` entry itself) ``batch_id``, ``product``, ``recipe``, ``recipe_version``,
  ``order_id`` and ``lot`` (from ``BatchID``, ``ProductID``, ``RecipeID``, ``RecipeVersion``,
  ``OrderID``, ``LotID`` of the batch) are set at its start and cleared at its end;
- ``UnitProcedure``, ``Operation`` and ``Phase`` entries set ``unit_procedure``,
  ``operation`` and ``phase`` to their name (the first ``Description``, else ``RecipeID``,
  else ``ID``) at their start, and clear them at their end;
- a ``Batch`` entry with ``Status`` ``Aborted`` sets ``batch_status = "aborted"`` at its end.

Changes of one path at one instant are one event (a phase that ends where the next starts
is one event setting the next), so nothing depends on arrival order.  Times are
``xs:dateTime`` (UTC when they have no zone, as ``uns context import`` CSV).  The document
is parsed by :mod:`defusedxml` (no entity expansion, no DTD fetching); an equipment id the
model cannot map is one error naming its line.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from uns.clock import parse_time
from uns.core.model import PlantModel
from uns.errors import UnsError

__all__ = ["BATCHML_SOURCE", "MAX_XML_BYTES", "Entry", "batchml_events", "parse_batchml"]

#: ``source`` of the events made from a BatchML file
BATCHML_SOURCE: Final = "batchml"
BATCHML_REASON: Final = "ISA-88 batch history (BatchML import)"
#: the largest file read (a year of a plant's batch list is a few MB)
MAX_XML_BYTES: Final = 256 << 20
_LINE: Final = "{urn:uns}line"  # where an element started, kept on the element by the parser
#: context keys a batch sets on its units, from the batch entry's elements
_BATCH_KEYS: Final = (
    ("batch_id", "BatchID"),
    ("product", "ProductID"),
    ("recipe", "RecipeID"),
    ("recipe_version", "RecipeVersion"),
    ("order_id", "OrderID"),
    ("lot", "LotID"),
)
_LEVEL_KEYS: Final = {"UnitProcedure": "unit_procedure", "Operation": "operation", "Phase": "phase"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _LineBuilder(ET.TreeBuilder):
    """A tree builder that notes each element's line (for error messages)."""

    parser: DefusedXMLParser | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        element = super().start(tag, attrs)
        if self.parser is not None:
            element.set(_LINE, str(self.parser.parser.CurrentLineNumber))
        return element


def _parse_xml(data: bytes, file: str) -> ET.Element:
    if len(data) > MAX_XML_BYTES:
        raise UnsError(f"{file}: {len(data):,} bytes, more than {MAX_XML_BYTES:,}")
    builder = _LineBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True)
    builder.parser = parser
    try:
        parser.feed(data)
        root: ET.Element = parser.close()
    except DefusedXmlException as exc:
        raise UnsError(f"{file}: refused: {exc} (entities and DTDs are not read)") from None
    except ET.ParseError as exc:
        raise UnsError(f"{file}: not XML: {exc}") from None
    return root


@dataclass(slots=True)
class Entry:
    """One ``BatchListEntry`` with what it inherits from the entries around it."""

    line: int
    kind: str  # Batch, UnitProcedure, Operation, Phase, Campaign, Other
    name: str
    batch: dict[str, str]  # the batch's BatchID, ProductID, ... (inherited)
    path: str | None
    start: int | None
    end: int | None
    status: str | None
    children: list[Entry] = field(default_factory=list)


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name and child.text and child.text.strip():
            return child.text.strip()
    return None


def _time(element: ET.Element, name: str, file: str) -> int | None:
    text = _child_text(element, name)
    if text is None:
        return None
    try:
        return parse_time(text)
    except UnsError:
        where = element.get(_LINE, "?")
        raise UnsError(f"{file}: line {where}: {name} {text!r} is not an xs:dateTime") from None


def _entries(
    element: ET.Element, model: PlantModel, file: str, batch: dict[str, str], path: str | None
) -> Iterator[Entry]:
    for child in element:
        if _local(child.tag) != "BatchListEntry":
            continue
        line = int(child.get(_LINE, "0"))
        kind = _child_text(child, "BatchListEntryType") or "Other"
        own = {tag: value for _key, tag in _BATCH_KEYS if (value := _child_text(child, tag)) is not None}
        if kind != "Batch":  # a procedural element's RecipeID names the element, not the recipe
            own.pop("RecipeID", None)
            own.pop("RecipeVersion", None)
        equipment = _child_text(child, "ActualEquipmentID") or _child_text(child, "EquipmentID")
        where = path
        if equipment is not None:
            where = model.equipment_path(equipment)
            if where is None:
                raise UnsError(
                    f"{file}: line {line}: EquipmentID {equipment!r} is not in the plant model "
                    "(add it to [equipment_ids], or name the equipment so)"
                )
        name = _child_text(child, "Description") or _child_text(child, "RecipeID") or _child_text(child, "ID")
        start, end = _time(child, "ActualStartTime", file), _time(child, "ActualEndTime", file)
        status = _child_text(child, "Status")
        entry = Entry(line, kind, name or kind, {**batch, **own}, where, start, end, status)
        entry.children = list(_entries(child, model, file, entry.batch, where))
        yield entry


def parse_batchml(data: bytes, model: PlantModel, *, file: str = "<batchml>") -> list[Entry]:
    """The batch list entries of a ``BatchInformation`` (or bare ``BatchList``) document,
    as a tree; :class:`~uns.errors.UnsError` naming the line of what cannot be used."""
    root = _parse_xml(data, file)
    if _local(root.tag) not in ("BatchInformation", "BatchList"):
        raise UnsError(f"{file}: the document is a {_local(root.tag)}, not a BatchInformation")
    lists = [root] if _local(root.tag) == "BatchList" else [e for e in root if _local(e.tag) == "BatchList"]
    return [entry for found in lists for entry in _entries(found, model, file, {}, None)]


def _walk(entries: list[Entry]) -> Iterator[Entry]:
    for entry in entries:
        yield entry
        yield from _walk(entry.children)


class _Changes:
    """Changes per (path, ts): one event each, a set winning over a clear of the same key."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, int], tuple[int, dict[str, str], set[str]]] = {}

    def put(self, line: int, path: str, ts: int, key: str, value: str | None) -> None:
        _line, to_set, to_clear = self.events.setdefault((path, ts), (line, {}, set()))
        if value is None:
            if key not in to_set:
                to_clear.add(key)
        else:
            to_clear.discard(key)
            to_set[key] = value

    def span(self, entry: Entry, path: str, values: dict[str, str]) -> None:
        assert entry.start is not None
        for key, value in values.items():
            self.put(entry.line, path, entry.start, key, value)
            if entry.end is not None:
                self.put(entry.line, path, entry.end, key, None)


def batchml_events(
    data: bytes, model: PlantModel, *, file: str = "<batchml>"
) -> list[tuple[int, str, dict[str, Any]]]:
    """``(line, path, context event)`` of a BatchML document, in time order (see the module doc)."""
    entries = list(_walk(parse_batchml(data, model, file=file)))
    changes = _Changes()
    by_batch: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.start is None:
            continue  # not executed (yet)
        if entry.kind in _LEVEL_KEYS and entry.path is not None:
            changes.span(entry, entry.path, {_LEVEL_KEYS[entry.kind]: entry.name})
        if "BatchID" in entry.batch:
            by_batch.setdefault(entry.batch["BatchID"], []).append(entry)
    for batch_entries in by_batch.values():
        placed = [e for e in batch_entries if e.path is not None]
        units = [e for e in placed if e.kind == "UnitProcedure"] or [e for e in placed if e.kind == "Batch"]
        head = next((e for e in batch_entries if e.kind == "Batch"), batch_entries[0])
        values = {key: head.batch[tag] for key, tag in _BATCH_KEYS if tag in head.batch}
        for unit in units or placed:
            assert unit.path is not None
            changes.span(unit, unit.path, values)
            if (head.status or "").lower() == "aborted" and unit.end is not None:
                changes.put(head.line, unit.path, unit.end, "batch_status", "aborted")
    out = []
    for (path, ts), (line, to_set, to_clear) in sorted(
        changes.events.items(), key=lambda kv: (kv[0][1], kv[0][0])
    ):
        event: dict[str, Any] = {"ts": ts, "source": BATCHML_SOURCE, "reason": BATCHML_REASON}
        if to_set:
            event["set"] = dict(sorted(to_set.items()))
        if to_clear:
            event["clear"] = sorted(to_clear)
        out.append((line, path, event))
    return out
